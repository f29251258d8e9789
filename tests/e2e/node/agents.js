#!/usr/bin/env node
// A scripted day at a per-agent CRM (crm.js), as its agents' browsers live it: real
// socket.io-client sockets, each with its own token, query, cookie and transport.
//
//   node agents.js BASE [CONTROL]   -> one JSON line on stdout:
//     {"agents": {name: [entry, ...]}, "backend": <crm.js's log>, "stalls": [...]}
//
// BASE is where the agents connect (crm.js itself, or a proxy in front of it); CONTROL is
// crm.js's own address, for its control API (default: BASE).
//
// Each agent's entries are what its sockets saw, in order:
//   {ns, type: "connect"} | {ns, type: "connect_error", message, data}
//   {ns, type: "disconnect", reason, will_reconnect} | {type: "reconnect_attempt", n}
//   {ns, type: "event", event, args, ack} (ack: the server asked for an answer)
//   {ns, type: "ack", for: event, args} or {ns, type: "ack", for: event, error}
// Values that differ between runs by nature are normalised: a socket id becomes
// "<sid a1 />" (that agent's socket on that namespace), an ISO timestamp "<timestamp>",
// binary {"$binary": "<hex>"}.
//
// Every step waits for what it causes, at every agent it reaches (no sleeps). A wait that
// runs out (WAIT_MS, default 4000) does not stop the scenario: it is listed in "stalls"
// and the next step runs, so a broken path shows all its differences in one transcript.
// Nothing negative is waited for: what should reach nobody is followed by a broadcast every
// connected agent must get, so anything delivered wrongly before it is in the transcript.
'use strict';

const http = require('http');
const { Manager } = require('socket.io-client');

const BASE = process.argv[2];
const CONTROL = process.argv[3] || BASE;
const WAIT_MS = Number(process.env.WAIT_MS || 4000);
const ACK_TIMEOUT_MS = Number(process.env.ACK_TIMEOUT_MS || 2000);
// The agents' own address (any 127.x is this host): so the backend can tell it from a
// proxy's 127.0.0.1.
const SOURCE_ADDRESS = process.env.SOURCE_ADDRESS || '127.0.0.2';
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

if (!BASE) {
  process.stderr.write('usage: node agents.js BASE [CONTROL]\n');
  process.exit(2);
}

const stalls = [];
const knownIds = new Map(); // socket id -> "<sid agent ns>"

// ---------------------------------------------------------------- agents

class Agent {
  // transports: null for the client's default (polling, then the upgrade to websocket).
  constructor(name, { auth, team, cookie, transports }) {
    this.name = name;
    this.auth = auth;
    this.entries = [];
    this.sockets = {};
    this.listeners = new Set();
    this.manager = new Manager(BASE, {
      autoConnect: false,
      query: { team },
      extraHeaders: { cookie },
      ...(transports ? { transports } : {}),
      agent: new http.Agent({ localAddress: SOURCE_ADDRESS }),
      localAddress: SOURCE_ADDRESS,
    });
    this.manager.on('reconnect_attempt', (n) => this.record({ type: 'reconnect_attempt', n }));
  }

  record(entry) {
    this.entries.push(entry);
    for (const listener of this.listeners) listener();
  }

  // Open the socket of namespace `ns`, answering the server's `are_you_there` as a
  // browser's handler would.
  open(ns = '/') {
    const socket = this.manager.socket(ns, { auth: this.auth });
    this.sockets[ns] = socket;
    socket.on('connect', () => {
      knownIds.set(socket.id, `<sid ${this.name} ${ns}>`);
      this.record({ ns, type: 'connect' });
    });
    socket.on('connect_error', (err) => {
      this.record({ ns, type: 'connect_error', message: err.message, data: err.data === undefined ? null : err.data });
    });
    socket.on('disconnect', (reason) => {
      this.record({ ns, type: 'disconnect', reason, will_reconnect: socket.active });
    });
    socket.onAny((event, ...args) => {
      const ack = args.length > 0 && typeof args[args.length - 1] === 'function';
      // enricher's connection state recovery (its pid says so, the backend having none of
      // its own) adds one offset, a last string argument, to each event that asks no ack:
      // the one thing a browser gets through enricher that the backend did not send
      const stamped = !ack && String(socket._pid).startsWith('enricher.');
      if (stamped && typeof args[args.length - 1] !== 'string') {
        this.record({ ns, type: 'event_without_offset', event });
      }
      const sent = ack ? args.slice(0, -1) : stamped ? args.slice(0, -1) : args;
      this.record({ ns, type: 'event', event, args: sent, ack });
    });
    socket.on('are_you_there', (question, cb) => {
      if (typeof cb === 'function') cb({ here: true, agent: this.name });
    });
    socket.connect();
    return socket;
  }

  emit(ns, event, ...args) {
    this.sockets[ns].emit(event, ...args);
  }

  // Emit asking for an acknowledgement; its answer (or the timeout) becomes an entry.
  emitAck(ns, event, ...args) {
    this.sockets[ns].timeout(ACK_TIMEOUT_MS).emit(event, ...args, (err, ...answer) => {
      this.record(err ? { ns, type: 'ack', for: event, error: err.message } : { ns, type: 'ack', for: event, args: answer });
    });
  }

  close() {
    for (const socket of Object.values(this.sockets)) socket.close();
  }

  // Resolves true once an entry from index `from` on satisfies `predicate`, false after WAIT_MS.
  waitFor(predicate, from) {
    return new Promise((resolve) => {
      const check = () => {
        if (!this.entries.slice(from).some(predicate)) return false;
        done(true);
        return true;
      };
      const done = (found) => {
        clearTimeout(timer);
        this.listeners.delete(check);
        resolve(found);
      };
      const timer = setTimeout(() => done(false), WAIT_MS);
      this.listeners.add(check);
      check();
    });
  }
}

const agents = {
  a1: new Agent('a1', {
    auth: { agent: 'a1', token: 'good-a1' },
    team: 'red',
    cookie: 'crm_session=s-a1; theme=dark',
    transports: null,
  }),
  a2: new Agent('a2', {
    auth: { agent: 'a2', token: 'good-a2' },
    team: 'blue',
    cookie: 'crm_session=s-a2',
    transports: ['polling'],
  }),
  a3: new Agent('a3', {
    auth: { agent: 'a3', token: 'good-a3' },
    team: 'red',
    cookie: 'crm_session=s-a3',
    transports: ['websocket'],
  }),
  x9: new Agent('x9', {
    auth: { agent: 'x9', token: 'good-a1' }, // a1's token: not x9's
    team: 'blue',
    cookie: 'crm_session=stolen',
    transports: ['polling'],
  }),
  s1: new Agent('s1', {
    auth: { agent: 's1', token: 'good-s1', role: 'supervisor' },
    team: 'ops',
    cookie: 'crm_session=s-s1',
    transports: ['websocket'],
  }),
};
const { a1, a2, a3, x9, s1 } = agents;

// ---------------------------------------------------------------- steps

// What a step waits for: an entry at one agent.
function sees(agent, what, predicate) {
  return { agent, what, predicate };
}
const connects = (agent, ns = '/') => sees(agent, `connect ${ns}`, (e) => e.ns === ns && e.type === 'connect');
const refused = (agent, ns = '/') => sees(agent, `connect_error ${ns}`, (e) => e.ns === ns && e.type === 'connect_error');
const disconnects = (agent, ns = '/') => sees(agent, `disconnect ${ns}`, (e) => e.ns === ns && e.type === 'disconnect');
const gets = (agent, event, ns = '/') => sees(agent, `${event} on ${ns}`, (e) => e.ns === ns && e.type === 'event' && e.event === event);
const acked = (agent, event, ns = '/') => sees(agent, `ack of ${event} on ${ns}`, (e) => e.ns === ns && e.type === 'ack' && e.for === event);

async function step(name, action, expected) {
  const marks = new Map(Object.values(agents).map((agent) => [agent, agent.entries.length]));
  await action();
  const found = await Promise.all(expected.map((e) => e.agent.waitFor(e.predicate, marks.get(e.agent))));
  expected.forEach((e, i) => {
    if (!found[i]) stalls.push({ step: name, agent: e.agent.name, waited_for: e.what });
  });
}

async function control(method, path, body) {
  const res = await fetch(CONTROL + path, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path} -> ${res.status}: ${text}`);
  return JSON.parse(text);
}

// `presence` at each of `who`, one per agent.
const presenceAt = (...who) => who.map((agent) => gets(agent, 'presence'));

async function scenario() {
  await step('a1 connects', () => a1.open('/'), [connects(a1), gets(a1, 'hello'), ...presenceAt(a1)]);
  await step('a1 tries /supervisor on the same connection', () => a1.open('/supervisor'), [refused(a1, '/supervisor')]);
  await step('a2 connects (polling)', () => a2.open('/'), [connects(a2), gets(a2, 'hello'), ...presenceAt(a1, a2)]);
  await step('a3 connects (websocket)', () => a3.open('/'), [connects(a3), gets(a3, 'hello'), ...presenceAt(a1, a2, a3)]);
  await step("x9 connects with a1's token", () => x9.open('/'), [refused(x9)]);
  await step('s1 connects to /supervisor', () => s1.open('/supervisor'), [
    connects(s1, '/supervisor'),
    gets(s1, 'welcome', '/supervisor'),
  ]);

  await step('a1 -> a2', () => a1.emitAck('/', 'send_to', { to: 'a2', text: 'hi a2' }), [acked(a1, 'send_to'), gets(a2, 'private')]);
  await step('a3 -> a1', () => a3.emitAck('/', 'send_to', { to: 'a1', text: 'hi a1, from a3' }), [
    acked(a3, 'send_to'),
    gets(a1, 'private'),
  ]);
  await step('a2 -> a2', () => a2.emitAck('/', 'send_to', { to: 'a2', text: 'note to self' }), [
    acked(a2, 'send_to'),
    gets(a2, 'private'),
  ]);
  await step('the CRM notifies a3 (with an attachment)', () => control('POST', '/_control/notify', { agent: 'a3', text: 'lead assigned', bytes: [9, 8, 7] }), [
    gets(a3, 'notification'),
  ]);
  await step('the CRM notifies a2 (polling)', () => control('POST', '/_control/notify', { agent: 'a2', text: 'call back', bytes: [0, 255] }), [
    gets(a2, 'notification'),
  ]);

  await step('a1 joins deal:42', () => a1.emitAck('/', 'join', 'deal:42'), [acked(a1, 'join')]);
  await step('a2 joins deal:42', () => a2.emitAck('/', 'join', 'deal:42'), [acked(a2, 'join')]);
  await step('a1 types in deal:42', () => a1.emit('/', 'typing', 'deal:42'), [gets(a2, 'typing')]);
  await step('a2 types in deal:42', () => a2.emit('/', 'typing', 'deal:42'), [gets(a1, 'typing')]);

  await step('the CRM asks a2 (polling)', () => a2.emit('/', 'ping_me'), [gets(a2, 'are_you_there'), gets(a2, 'you_said')]);
  await step('the CRM asks a3 (websocket)', () => a3.emit('/', 'ping_me'), [gets(a3, 'are_you_there'), gets(a3, 'you_said')]);

  await step('a1 uploads a file', () => a1.emitAck('/', 'file', Buffer.from([1, 2, 3, 250, 0, 255])), [acked(a1, 'file')]);
  await step('a2 uploads a file (polling)', () => a2.emitAck('/', 'file', Buffer.from([200, 0, 1])), [acked(a2, 'file')]);
  await step('a3 downloads a file', () => a3.emit('/', 'get_file', 'quote.pdf'), [gets(a3, 'file_for_you')]);
  await step('a2 downloads a file (polling)', () => a2.emit('/', 'get_file', 'contract.pdf'), [gets(a2, 'file_for_you')]);

  await step('s1 asks for stats', () => s1.emitAck('/supervisor', 'stats'), [acked(s1, 'stats', '/supervisor')]);
  await step('s1 whispers to a3', () => s1.emitAck('/supervisor', 'whisper', { to: 'a3', text: 'please wrap up' }), [
    acked(s1, 'whisper', '/supervisor'),
    gets(a3, 'whisper'),
  ]);

  await step('a customer writes (broadcast)', () => control('POST', '/_control/broadcast', { text: 'Hello from customer' }), [
    gets(a1, 'new_message'),
    gets(a2, 'new_message'),
    gets(a3, 'new_message'),
    gets(s1, 'activity', '/supervisor'),
  ]);

  await step('the CRM kicks a3', () => control('POST', '/_control/kick', { agent: 'a3' }), [disconnects(a3), ...presenceAt(a1, a2)]);
  await step('a1 -> a3, gone', () => a1.emitAck('/', 'send_to', { to: 'a3', text: 'still there?' }), [acked(a1, 'send_to')]);

  // The sentinel: after it, anything sent to the wrong agent has arrived.
  await step('a customer writes again (the sentinel)', () => control('POST', '/_control/broadcast', { text: 'Thanks, bye' }), [
    gets(a1, 'new_message'),
    gets(a2, 'new_message'),
    gets(s1, 'activity', '/supervisor'),
  ]);

  await step('a1 leaves', () => a1.close(), [disconnects(a1), ...presenceAt(a2)]);
  await step('a2 leaves', () => a2.close(), [disconnects(a2)]);
  await step('s1 leaves', () => s1.close(), [disconnects(s1, '/supervisor')]);
  x9.close();
  a3.close();
}

// ---------------------------------------------------------------- the transcript

function normalise(value) {
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return { $binary: Buffer.from(value).toString('hex') };
  if (value instanceof ArrayBuffer) return { $binary: Buffer.from(value).toString('hex') };
  if (Array.isArray(value)) return value.map(normalise);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalise(v)]));
  }
  if (typeof value === 'string') {
    if (knownIds.has(value)) return knownIds.get(value);
    if (TIMESTAMP.test(value)) return '<timestamp>';
  }
  return value;
}

async function main() {
  await scenario();
  // Every socket that connected has disconnected by now, and the backend should know.
  const connected = Object.values(agents).reduce((n, agent) => n + agent.entries.filter((e) => e.type === 'connect').length, 0);
  const backend = await control('GET', `/_control/log?disconnects=${connected}&timeout_ms=${WAIT_MS}`);
  if (!backend.settled) stalls.push({ step: 'the backend log', waited_for: `${connected} disconnects at the backend, saw ${backend.disconnects}` });
  const transcript = {
    agents: Object.fromEntries(Object.entries(agents).map(([name, agent]) => [name, normalise(agent.entries)])),
    backend: normalise({ seen: backend.seen, presence: backend.presence }),
    stalls,
  };
  process.stdout.write(JSON.stringify(transcript) + '\n', () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(`agents.js failed: ${err.stack || err}\n`);
  process.exit(1);
});
