#!/usr/bin/env node
// A per-agent CRM backend, the kind enricher's transparent mode sits in front of: the real
// `socket.io` v4 server, where every agent's socket is its own (its token, its rooms, its
// private messages), plus a control API for the tests and a log of what it saw.
//
//   PORT=0 node crm.js     -> prints {"event":"listening","port":N} on stdout
//
// Namespace "/": a middleware wants auth {agent, token: "good-<agent>"} (else "invalid
// token", data {code: "BAD_TOKEN", agent}); each socket joins "agent:<agent>", gets its
// `hello`, and everyone gets `presence` {online} at each connect and disconnect. Events:
//   send_to {to, text} + ack      -> `private` {from, text} to agent:<to>; ack {ok, from}
//   join room + ack               -> joins the room; ack true
//   typing room                   -> `typing` {agent} to the room, not to the sender
//   ping_me                       -> emitWithAck `are_you_there` {n: 1} (2 s), then
//                                    `you_said` with the answer (or {error})
//   file Buffer + ack             -> ack {size, first}
//   get_file name                 -> `file_for_you` {name, data: Buffer}
// Namespace "/supervisor": a middleware wants auth.role "supervisor" (else "not a
// supervisor", data {code: "NOT_SUPERVISOR", agent, role}); `welcome` on connect;
//   stats + ack                   -> ack {online} (the agents on "/")
//   whisper {to, text} + ack      -> `whisper` {from, text} to agent:<to> on "/"; ack true
// Control API:
//   POST /_control/broadcast {text}           -> io.emit("new_message", <the contract's
//        message>) and `activity` {message_id, room_id} on /supervisor; {message_id}
//   POST /_control/notify {agent, text, bytes} -> `notification` {text, attachment: Buffer
//        of bytes, or null} to agent:<agent>; {sockets}
//   POST /_control/kick {agent}               -> disconnect(true) of that agent's sockets; {kicked}
//   GET  /_control/log?disconnects=N&timeout_ms=T -> what the backend saw, once N sockets
//        have disconnected (or T ms passed: then "settled" is false):
//        {settled, seen: {agent: [handshake | event | answer | disconnect, ...]},
//         presence: [{online, sockets}, ...]}
// Buffers are logged as {"$binary": "<hex>"}. Message ids are numbered, so two runs of the
// same scenario log the same ids.
'use strict';

const http = require('http');
const { URL } = require('url');
const { Server } = require('socket.io');
const { HttpError, send, readJson, handler } = require('./http-json');

const ACK_TIMEOUT_MS = Number(process.env.ACK_TIMEOUT_MS || 2000);
const ROOM_ID = '7d0c2a5e-93b4-4c1e-9a57-2f6f0e4b8c11';
const FILE_BYTES = [0, 1, 127, 128, 254, 255];
// engine.io's own query parameters: how a client connects, not what it says.
const ENGINE_QUERY = ['EIO', 'transport', 't', 'sid', 'j', 'b64'];

function log(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// ---------------------------------------------------------------- what the backend saw

const seen = {}; // agent -> [entry, ...] in the order they happened
const presence = []; // {online, sockets} at each `presence` emitted
let disconnects = 0;
const disconnectWaiters = []; // {count, resolve}

function note(agent, entry) {
  (seen[agent] = seen[agent] || []).push(entry);
  log({ event: 'seen', agent, ...entry });
}

function disconnected() {
  disconnects += 1;
  for (let i = disconnectWaiters.length - 1; i >= 0; i--) {
    if (disconnects >= disconnectWaiters[i].count) {
      disconnectWaiters[i].resolve(true);
      disconnectWaiters.splice(i, 1);
    }
  }
}

// JSON-safe: Buffers as {"$binary": hex}.
function plain(value) {
  if (Buffer.isBuffer(value)) return { $binary: value.toString('hex') };
  if (value instanceof ArrayBuffer) return { $binary: Buffer.from(value).toString('hex') };
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

function agentOf(socket) {
  const agent = socket.handshake.auth && socket.handshake.auth.agent;
  return typeof agent === 'string' ? agent : '(none)';
}

function handshake(socket, ns, outcome) {
  const h = socket.handshake;
  const query = { ...h.query };
  for (const key of ENGINE_QUERY) delete query[key];
  const xff = h.headers['x-forwarded-for'];
  // The agent's address as the backend knows it: the first hop a proxy reports, else the peer.
  const address = (xff ? xff.split(',')[0].trim() : h.address).replace(/^::ffff:/, '');
  return { type: 'handshake', ns, outcome, auth: h.auth, query, cookie: h.headers.cookie || null, address };
}

function recordEvents(socket, ns) {
  const agent = agentOf(socket);
  socket.onAny((event, ...args) => {
    const ack = args.length > 0 && typeof args[args.length - 1] === 'function';
    note(agent, { type: 'event', ns, event, args: plain(ack ? args.slice(0, -1) : args), ack });
  });
}

async function onlineAgents() {
  const sockets = await io.fetchSockets();
  return { online: [...new Set(sockets.map(agentOf))].sort(), sockets: sockets.length };
}

async function publishPresence() {
  const now = await onlineAgents();
  presence.push(now);
  io.emit('presence', { online: now.online });
}

// ---------------------------------------------------------------- socket.io

const httpServer = http.createServer(handler(handle));

const io = new Server(httpServer);

io.use((socket, next) => {
  const auth = socket.handshake.auth || {};
  if (typeof auth.agent === 'string' && auth.token === `good-${auth.agent}`) {
    note(agentOf(socket), handshake(socket, '/', 'accepted'));
    return next();
  }
  note(agentOf(socket), handshake(socket, '/', 'refused'));
  const err = new Error('invalid token');
  err.data = { code: 'BAD_TOKEN', agent: auth.agent === undefined ? null : auth.agent };
  next(err);
});

io.on('connection', (socket) => {
  const agent = agentOf(socket);
  socket.join(`agent:${agent}`);
  recordEvents(socket, '/');

  socket.on('send_to', (body, cb) => {
    io.to(`agent:${body && body.to}`).emit('private', { from: agent, text: body && body.text });
    if (typeof cb === 'function') cb({ ok: true, from: agent });
  });
  socket.on('join', (room, cb) => {
    socket.join(room);
    if (typeof cb === 'function') cb(true);
  });
  socket.on('typing', (room) => socket.to(room).emit('typing', { agent }));
  socket.on('ping_me', async () => {
    let answer;
    try {
      answer = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck('are_you_there', { n: 1 });
      note(agent, { type: 'answer', ns: '/', event: 'are_you_there', answer: plain(answer) });
    } catch (err) {
      answer = { error: err.message };
      note(agent, { type: 'answer', ns: '/', event: 'are_you_there', error: err.message });
    }
    socket.emit('you_said', answer);
  });
  socket.on('file', (buf, cb) => {
    if (typeof cb === 'function') cb({ size: buf.length, first: buf[0] });
  });
  socket.on('get_file', (name) => socket.emit('file_for_you', { name, data: Buffer.from(FILE_BYTES) }));

  socket.on('disconnect', async (reason) => {
    note(agent, { type: 'disconnect', ns: '/', reason });
    await publishPresence();
    disconnected();
  });

  socket.emit('hello', {
    agent,
    id: socket.id,
    query: socket.handshake.query.team,
    xff: socket.handshake.headers['x-forwarded-for'] ? 'set' : 'unset',
    cookie: socket.handshake.headers.cookie || null,
  });
  publishPresence();
});

const supervisors = io.of('/supervisor');

supervisors.use((socket, next) => {
  const auth = socket.handshake.auth || {};
  if (auth.role === 'supervisor') {
    note(agentOf(socket), handshake(socket, '/supervisor', 'accepted'));
    return next();
  }
  note(agentOf(socket), handshake(socket, '/supervisor', 'refused'));
  const err = new Error('not a supervisor');
  err.data = {
    code: 'NOT_SUPERVISOR',
    agent: auth.agent === undefined ? null : auth.agent,
    role: auth.role === undefined ? null : auth.role,
  };
  next(err);
});

supervisors.on('connection', (socket) => {
  const agent = agentOf(socket);
  recordEvents(socket, '/supervisor');
  socket.on('stats', async (cb) => {
    const { online } = await onlineAgents();
    if (typeof cb === 'function') cb({ online });
  });
  socket.on('whisper', (body, cb) => {
    io.to(`agent:${body && body.to}`).emit('whisper', { from: agent, text: body && body.text });
    if (typeof cb === 'function') cb(true);
  });
  socket.on('disconnect', (reason) => {
    note(agent, { type: 'disconnect', ns: '/supervisor', reason });
    disconnected();
  });
  socket.emit('welcome', { agent, role: socket.handshake.auth.role });
});

// ---------------------------------------------------------------- control API

function agentParam(body) {
  if (typeof body.agent !== 'string' || !body.agent) throw new HttpError(400, 'agent (string) required');
  return body.agent;
}

let messages = 0;

// A customer's message as the seed's handleIncomingMessage() broadcasts it (CONTRACT.md).
function customerMessage(text) {
  messages += 1;
  const now = new Date().toISOString();
  return {
    id: `00000000-0000-4000-8000-${String(messages).padStart(12, '0')}`,
    room_id: ROOM_ID,
    user_id: null,
    content_type: 'text',
    content_text: text,
    wa_message_id: `wamid.crm${messages}`,
    status: 'sent',
    media_type: null,
    gcs_url: null,
    mime_type: null,
    metadata: {},
    created_at: now,
    updated_at: now,
  };
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://crm');
  const path = url.pathname;
  const method = req.method;

  if (method === 'POST' && path === '/_control/broadcast') {
    const body = await readJson(req);
    const msg = customerMessage(typeof body.text === 'string' ? body.text : 'Hello from customer');
    io.emit('new_message', msg);
    supervisors.emit('activity', { message_id: msg.id, room_id: msg.room_id });
    log({ event: 'broadcast', message_id: msg.id });
    return send(res, 200, { message_id: msg.id });
  }
  if (method === 'POST' && path === '/_control/notify') {
    const body = await readJson(req);
    const agent = agentParam(body);
    const attachment = Array.isArray(body.bytes) ? Buffer.from(body.bytes) : null;
    const sockets = (await io.in(`agent:${agent}`).fetchSockets()).length;
    io.to(`agent:${agent}`).emit('notification', { text: body.text, attachment });
    return send(res, 200, { sockets });
  }
  if (method === 'POST' && path === '/_control/kick') {
    const agent = agentParam(await readJson(req));
    const kicked = (await io.in(`agent:${agent}`).fetchSockets()).length;
    io.in(`agent:${agent}`).disconnectSockets(true);
    log({ event: 'kick', agent, kicked });
    return send(res, 200, { kicked });
  }
  if (method === 'GET' && path === '/_control/log') {
    const count = Number(url.searchParams.get('disconnects')) || 0;
    const timeout = Number(url.searchParams.get('timeout_ms')) || 5000;
    let settled = disconnects >= count;
    if (!settled) {
      settled = await new Promise((resolve) => {
        const waiter = { count, resolve };
        disconnectWaiters.push(waiter);
        setTimeout(() => {
          const i = disconnectWaiters.indexOf(waiter);
          if (i >= 0) disconnectWaiters.splice(i, 1);
          resolve(false);
        }, timeout);
      });
    }
    return send(res, 200, { settled, disconnects, seen, presence });
  }
  return send(res, 404, { error: 'not found' });
}

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

httpServer.listen(Number(process.env.PORT || 0), process.env.HOST || '127.0.0.1', () => {
  log({ event: 'listening', port: httpServer.address().port });
});
