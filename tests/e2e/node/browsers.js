#!/usr/bin/env node
// N "browsers": real socket.io-client v4 sockets, each keeping the chat sidebar the way the
// seed's recommended frontend handlers build it (/work/shared/seed/socket-events.md), with
// no room open (so every new_message adds 1 to unread_count).
//
//   node browsers.js URL N [--transports T,...] [--no-deflate] [--auth JSON] [--quiet] [--raw]
//
// --transports: socket.io-client's `transports` (default: polling, then the upgrade);
// --no-deflate: do not offer permessage-deflate (socket.io-client offers it by default);
// --auth: socket.io-client's `auth` object, e.g. '{"token":"..."}' (sent at every connect).
// --quiet: no line per event (for hundreds of browsers); instead one line
//   {"type":"all","event":e,"key":k,"n":n} when every browser has received that event n times
//   (key: the id of a room or message event, else its arguments as JSON), and the command
//   {"cmd":"summary"} answers how many browsers got each id how often, and each room's
//   sidebar entries, grouped: {"type":"summary","counts":{event:{key:{times:browsers}}},
//   "sidebars":{"modern"|"legacy":{room_id:{entry JSON:browsers}}}}.
// --raw: print every event with all its arguments too (type "raw").
//
// stdout, one JSON object a line:
//   {"type":"connected","browser":i,...}          on each connect
//   {"type":"disconnected","browser":i,"reason"}  on each disconnect
//   {"type":"event","browser":i,"event":e,"id":..,"room_id":..,"payload":..}   known events
//   {"type":"event","browser":i,"event":e,"args":[...]}                        any other event
//   {"type":"seq","browser":i,"n":n,"ok":bool}  each test:seq event (ok: its pad is intact)
//   {"type":"event","browser":i,"event":"test:deep","args":[{"depth":d,"bottom":..}]}
//   {"type":"dump","browsers":[...]}  {"type":"ack","tag":t,"args"|"error":..}  {"type":"emitted","tag":t}
// stdin, one JSON object a line: {"cmd":"dump"} | {"cmd":"emit",...} | {"cmd":"close"}
//   | {"cmd":"pause","browser":i} | {"cmd":"resume","browser":i}  (stop / start reading the
//   browser's WebSocket, or polling: a browser whose tab or network stalls)
//   | {"cmd":"auth","browser":i,"auth":{...}}  (the `auth` its next connect presents: a
//   frontend that refreshed its token)
//   | {"cmd":"cut","browser":i}  (socket.io.engine.close(): its connection is lost, as in a
//   network blip; it stays away, without reconnecting, until)
//   | {"cmd":"reconnect","browser":i}  (it comes back: socket.io-client presents its pid and
//   last offset, connection state recovery; "connected" then says whether it recovered)
//
// Connection state recovery: a server with it on (socket.io-client sets `socket._pid`
// from its CONNECT answer) appends each event's offset as a last string argument. The
// handlers here ignore it, as a frontend's may (they read the first argument); the
// catch-all handler leaves it out of the arguments it prints, and keeps every offset in
// order per browser (dump: "offsets"), to check nothing came twice or out of order.
'use strict';

const readline = require('readline');
const { io } = require('socket.io-client');

const url = process.argv[2];
const count = Number(process.argv[3] || 1);
if (!url || !Number.isInteger(count) || count < 1) {
  process.stderr.write('usage: node browsers.js URL N [--transports T,...] [--no-deflate] [--auth JSON] [--quiet] [--raw]\n');
  process.exit(2);
}
const flags = process.argv.slice(4);
const options = { forceNew: true };
const transportsAt = flags.indexOf('--transports');
if (transportsAt >= 0) options.transports = flags[transportsAt + 1].split(',');
if (flags.includes('--no-deflate')) options.perMessageDeflate = false;
const authAt = flags.indexOf('--auth');
if (authAt >= 0) options.auth = JSON.parse(flags[authAt + 1]);
const quiet = flags.includes('--quiet');

// (event, key) -> {perBrowser: Map(browser -> times), atLeast: [browsers with >= n]}
const tallies = new Map();
function tally(browser, event, key) {
  const name = `${event}\u0000${key}`;
  let t = tallies.get(name);
  if (!t) tallies.set(name, (t = { event, key, perBrowser: new Map(), atLeast: [] }));
  const n = (t.perBrowser.get(browser) || 0) + 1;
  t.perBrowser.set(browser, n);
  t.atLeast[n] = (t.atLeast[n] || 0) + 1;
  if (t.atLeast[n] === count) out({ type: 'all', event, key, n });
}
// --raw: also {"type":"raw","browser":i,"event":e,"args":[...]} for every event, all arguments.
const raw = flags.includes('--raw');

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const ROOM_EVENTS = new Set(['new_room_complete', 'new_room']);
const MESSAGE_EVENTS = new Set(['new_message', 'room:new_message']);

class Browser {
  constructor(index) {
    this.index = index;
    this.modern = []; // sidebar of a frontend that listens to new_room_complete
    this.legacy = []; // sidebar of an unchanged frontend that listens to new_room
    this.counts = { new_message: {}, 'room:new_message': {}, new_room_complete: {}, new_room: {} };
    this.other = [];
    this.connects = 0;
    this.recovered = [];
    this.offsets = [];
    this.socket = io(url, options);

    this.socket.on('connect', () => {
      this.connects += 1;
      this.recovered.push(Boolean(this.socket.recovered));
      out({
        type: 'connected',
        browser: index,
        sid: this.socket.id,
        connects: this.connects,
        recovered: Boolean(this.socket.recovered),
      });
    });
    this.socket.on('disconnect', (reason) => out({ type: 'disconnected', browser: index, reason }));
    this.socket.on('connect_error', (err) =>
      out({
        type: 'connect_error',
        browser: index,
        error: String(err && err.message),
        data: err && err.data !== undefined ? err.data : null,
      }),
    );

    // The seed's recommended handlers ("Frontend Changes").
    this.socket.on('new_room_complete', (room) => {
      this.count('new_room_complete', room && room.room_id, room);
      this.modern = [room, ...this.modern];
    });
    this.socket.on('new_message', (message) => {
      this.count('new_message', message && message.id, message);
      if (!message || typeof message !== 'object') return; // a backend that drifts
      this.modern = this.modern.map((r) =>
        r.room_id === message.room_id
          ? {
              ...r,
              last_message: {
                content_text: message.content_text,
                content_type: message.content_type,
                created_at: message.created_at,
              },
              unread_count: (r.unread_count || 0) + 1,
            }
          : r,
      );
      // The seed's quick-fix handler, which unchanged frontends run on new_message.
      this.legacy = this.legacy.map((r) =>
        r.room_id === message.room_id
          ? {
              ...r,
              last_message_text: message.content_text,
              last_message_timestamp: message.created_at,
              last_message_type: message.content_type,
              unread_count: (r.unread_count || 0) + 1,
            }
          : r,
      );
    });
    this.socket.on('new_room', (data) => {
      this.count('new_room', data && data.room_id, data);
      if (data && typeof data === 'object') this.legacy = [data, ...this.legacy];
    });
    this.socket.on('room:new_message', (message) => {
      this.count('room:new_message', message && message.id, message);
    });

    this.socket.on('test:seq', (data) => {
      const ok = typeof data.pad === 'string' && charSum(data.pad) === data.sum;
      out({ type: 'seq', browser: index, n: data.n, ok });
    });

    // A payload nested too deep for the harness's JSON: its depth and what is at the bottom.
    this.socket.on('test:deep', (data) => {
      let depth = 0;
      let value = data;
      while (value && typeof value === 'object' && Array.isArray(value.a)) {
        value = value.a[0];
        depth += 1;
      }
      out({ type: 'event', browser: index, event: 'test:deep', args: [{ depth, bottom: value }] });
    });

    this.socket.onAny((event, ...args) => {
      if (this.socket._pid && args.length > 0 && typeof args[args.length - 1] === 'string') {
        this.offsets.push(args.pop());
      }
      if (raw) out({ type: 'raw', browser: index, event, args });
      if (event === 'test:seq' || event === 'test:deep') return;
      if (ROOM_EVENTS.has(event) || MESSAGE_EVENTS.has(event)) return;
      const hasAck = args.length > 0 && typeof args[args.length - 1] === 'function';
      const plain = hasAck ? args.slice(0, -1) : args;
      if (quiet) return tally(index, event, JSON.stringify(plain));
      this.other.push({ event, args: plain });
      out({ type: 'event', browser: index, event, args: plain });
    });
  }

  count(event, id, payload) {
    const key = String(id);
    this.counts[event][key] = (this.counts[event][key] || 0) + 1;
    if (quiet) return tally(this.index, event, key);
    out({
      type: 'event',
      browser: this.index,
      event,
      id: id === undefined ? null : id,
      room_id: payload && payload.room_id !== undefined ? payload.room_id : null,
      payload,
    });
  }

  transport() {
    const transport = this.socket.io.engine && this.socket.io.engine.transport;
    const ws = transport && transport.ws;
    return {
      name: transport ? transport.name : null,
      extensions: ws && typeof ws.extensions === 'string' ? ws.extensions : '',
    };
  }

  // The TCP socket under the browser's WebSocket (socket.io-client in Node uses `ws`).
  tcp() {
    const transport = this.socket.io.engine && this.socket.io.engine.transport;
    return transport && transport.ws && transport.ws._socket;
  }

  // A polling browser that stops polling: the request under way completes, no other is
  // sent (engine.io-client's Polling._poll starts each one) until it resumes.
  pausePolling(transport, pause) {
    if (pause) {
      if (transport._enricherPoll) return;
      transport._enricherPoll = transport._poll;
      transport._stalled = false;
      transport._poll = () => {
        transport._stalled = true;
      };
    } else if (transport._enricherPoll) {
      transport._poll = transport._enricherPoll;
      delete transport._enricherPoll;
      if (transport._stalled) transport._poll();
    }
  }

  dump() {
    return {
      transport: this.transport(),
      browser: this.index,
      modern: this.modern,
      legacy: this.legacy,
      counts: this.counts,
      other: this.other,
      connects: this.connects,
      recovered: this.recovered,
      offsets: this.offsets,
      connected: this.socket.connected,
    };
  }
}

const browsers = [];
for (let i = 0; i < count; i++) browsers.push(new Browser(i));

// What every browser got, grouped: identical browsers make one entry.
function summary() {
  const counts = {};
  for (const t of tallies.values()) {
    const byTimes = {};
    for (const times of t.perBrowser.values()) byTimes[times] = (byTimes[times] || 0) + 1;
    (counts[t.event] = counts[t.event] || {})[t.key] = byTimes;
  }
  const sidebars = { modern: {}, legacy: {} };
  for (const b of browsers) {
    for (const style of ['modern', 'legacy']) {
      const entries = {};
      for (const r of b[style]) (entries[r.room_id] = entries[r.room_id] || []).push(r);
      for (const [roomId, list] of Object.entries(entries)) {
        const r = list[0];
        const last = r.last_message || {};
        const shown = JSON.stringify({
          entries: list.length,
          name: (r.leads_info && r.leads_info.name) || r.room_title || r.room_phone,
          last_text: style === 'modern' ? last.content_text : r.last_message_text,
          last_at: style === 'modern' ? last.created_at : r.last_message_timestamp,
          unread: r.unread_count,
          enrichment: r.enrichment,
        });
        const byShown = (sidebars[style][roomId] = sidebars[style][roomId] || {});
        byShown[shown] = (byShown[shown] || 0) + 1;
      }
    }
  }
  return { counts, sidebars };
}

function charSum(text) {
  let sum = 0;
  for (let i = 0; i < text.length; i++) sum = (sum + text.charCodeAt(i)) % 1000000007;
  return sum;
}

function close(code) {
  for (const b of browsers) b.socket.disconnect();
  // Let the disconnect packets leave before exiting.
  setImmediate(() => process.exit(code));
}

function command(cmd) {
  if (cmd.cmd === 'dump') {
    out({ type: 'dump', tag: cmd.tag === undefined ? null : cmd.tag, browsers: browsers.map((b) => b.dump()) });
  } else if (cmd.cmd === 'summary') {
    out({ type: 'summary', tag: cmd.tag === undefined ? null : cmd.tag, ...summary() });
  } else if (cmd.cmd === 'emit') {
    const b = browsers[cmd.browser];
    const tag = cmd.tag === undefined ? null : cmd.tag;
    if (!b) return out({ type: 'error', tag, error: `no browser ${cmd.browser}` });
    const args = Array.isArray(cmd.args) ? cmd.args : [];
    if (cmd.ack) {
      b.socket.timeout(Number(cmd.timeout_ms) || 5000).emit(cmd.event, ...args, (err, ...reply) => {
        if (err) out({ type: 'ack', tag, error: String(err && err.message ? err.message : err) });
        else out({ type: 'ack', tag, args: reply });
      });
    } else {
      b.socket.emit(cmd.event, ...args);
      out({ type: 'emitted', tag });
    }
  } else if (cmd.cmd === 'pause' || cmd.cmd === 'resume') {
    const b = browsers[cmd.browser];
    const tag = cmd.tag === undefined ? null : cmd.tag;
    const tcp = b && b.tcp();
    const transport = b && b.socket.io.engine && b.socket.io.engine.transport;
    if (tcp) {
      if (cmd.cmd === 'pause') tcp.pause();
      else tcp.resume();
    } else if (transport && transport.name === 'polling') {
      b.pausePolling(transport, cmd.cmd === 'pause');
    } else {
      return out({ type: 'error', tag, error: `browser ${cmd.browser} has no transport to pause` });
    }
    out({ type: cmd.cmd === 'pause' ? 'paused' : 'resumed', tag, browser: cmd.browser });
  } else if (cmd.cmd === 'auth') {
    const b = browsers[cmd.browser];
    const tag = cmd.tag === undefined ? null : cmd.tag;
    if (!b) return out({ type: 'error', tag, error: `no browser ${cmd.browser}` });
    b.socket.auth = cmd.auth;
    out({ type: 'auth_set', tag, browser: cmd.browser });
  } else if (cmd.cmd === 'cut' || cmd.cmd === 'reconnect') {
    const b = browsers[cmd.browser];
    const tag = cmd.tag === undefined ? null : cmd.tag;
    if (!b) return out({ type: 'error', tag, error: `no browser ${cmd.browser}` });
    if (cmd.cmd === 'cut') {
      b.socket.io.reconnection(false); // away until "reconnect"
      b.socket.io.engine.close();
    } else {
      b.socket.io.reconnection(true);
      b.socket.connect();
    }
    out({ type: cmd.cmd === 'cut' ? 'cut' : 'reconnecting', tag, browser: cmd.browser });
  } else if (cmd.cmd === 'close') {
    close(0);
  } else {
    out({ type: 'error', error: `unknown command ${JSON.stringify(cmd)}` });
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    return out({ type: 'error', error: `stdin line is not JSON: ${err.message}` });
  }
  command(cmd);
});
rl.on('close', () => close(0));
process.on('SIGTERM', () => close(0));
