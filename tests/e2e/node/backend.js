#!/usr/bin/env node
// Backend stub for enricher's end-to-end tests: the real `socket.io` v4 server, emitting
// exactly what the seed's backend emits (see /work/shared/seed/socket-events.md), plus the
// REST endpoints a page refresh uses and a control API that the pytest tests drive.
//
//   PORT=0 [TLS_CERT=.. TLS_KEY=..] node backend.js     -> prints {"event":"listening","port":N} on stdout
//
// Every line on stdout is one JSON object; the tests read them.
//
// For restarts and accounting (all optional):
//   STORE=path   rooms and messages are appended to this JSON-lines file and read back at
//                start, so a restarted stub (even after SIGKILL) still answers REST for them;
//   GATE=closed  Socket.IO connections are refused until POST /_control/accept (which
//                with {"open": false} closes the gate again);
//   LOAD={"interval_ms":50,"new_room_every":4}  a steady load from start: every interval a
//                message, every new_room_every-th one from a new customer (new_room first).
//   CORS_ORIGIN=http://origin  REST answers allow that origin, with credentials (and
//                preflights are answered), as a backend serving a frontend elsewhere does.
// Plain REST routes for the HTTP pass-through tests (what a frontend calls besides
// /rooms and /messages): GET|HEAD /files/download?bytes=N[&chunked=1] (deterministic
// bytes, streamed with backpressure), POST /uploads (sha256 and size of the body, the parts
// of a multipart one), GET /slow?ms=N (logs {"event":"slow_started"}, and {"event":"slow_abandoned"} if its client goes
// before the answer), GET /fail (500), GET /redirect?to=relative|absolute,
// GET /cookies/set (two Set-Cookie), GET /me (401 without a session cookie or a Bearer
// token, or with a token POST /_control/me {"revoke": token} revoked; no answer at all
// after {"silent": true}), GET /gzip (a gzip-encoded JSON body), GET /broken (cut after half its
// Content-Length), GET /huge-header?bytes=N (a Set-Cookie of N bytes), any method on /echo
// (what arrived: method, URL, raw headers), GET /app/ (the seed's Solusi 3 inbox page,
// solusi3.html).
// Every broadcast of new_room / new_message / control emits is numbered (`seq`) and logged
// as {"event":"emitted","seq","name","id","room_id","sockets"}; once its bytes are written to
// a connected socket (engine.io's send callback, after a noop packet that follows it), the
// stub logs {"event":"delivered","seq","sid"}. What the backend emitted while a client was
// connected, and that reached the kernel before a SIGKILL, is exactly what is "delivered".
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const crypto = require('crypto');
const zlib = require('zlib');
const seed = require('./seed');
const { HttpError, send, readJson, handler } = require('./http-json');
const { PATTERN, download, describeUpload } = require('./transfers');
const { URL } = require('url');
const { Server } = require('socket.io');

const AGENT_ID = crypto.randomUUID();
const REST_SHAPES = new Set(['flat', 'nested']);
const REST_FAILS = new Set([null, '500', 'hang', 'garbage']);
// rest_body: the answer's shape when a backend drifts: `data` a list, null or a string, or
// the body itself a list; rest_patch: fields of `data` replaced (wrongly typed, say).
const REST_BODIES = new Set([null, 'data_list', 'data_null', 'data_string', 'body_list']);

function log(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------- in-memory database

const config = { rest_shape: 'flat', rest_delay_ms: 0, rest_fail: null, rest_body: null, rest_patch: null };
const KNOBS = ['rest_shape', 'rest_delay_ms', 'rest_fail', 'rest_body', 'rest_patch'];
const rooms = new Map(); // room_id -> room (insertion order = creation order)
const roomByPhone = new Map(); // phone -> room_id
const restCalls = {}; // room_id -> number of GET /rooms/:id
const clientEvents = []; // {sid, event, args, has_ack}
let totalConnections = 0;
const connectionWaiters = []; // {count, resolve}

// ---------------------------------------------------------------- the store, across restarts

const STORE = process.env.STORE || null;

function persist(record) {
  if (STORE) fs.appendFileSync(STORE, JSON.stringify(record) + '\n');
}

function loadStore() {
  if (!STORE || !fs.existsSync(STORE)) return;
  for (const line of fs.readFileSync(STORE, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    let record;
    try {
      record = JSON.parse(line);
    } catch (err) {
      continue; // a line cut by a SIGKILL
    }
    if (record.room) {
      rooms.set(record.room.id, { ...record.room, messages: [], overrides: {} });
      roomByPhone.set(record.room.phone, record.room.id);
      seed.stampAfter(record.room.created_at);
    } else if (record.message && rooms.has(record.message.room_id)) {
      const room = rooms.get(record.message.room_id);
      room.messages.push(record.message);
      room.updated_at = record.message.created_at;
      seed.stampAfter(record.message.created_at);
    }
  }
}

// ---------------------------------------------------------------- numbered broadcasts

let seq = 0;

function broadcast(event, id, roomId, ...args) {
  seq += 1;
  const n = seq;
  const sockets = [...io.of('/').sockets.values()];
  io.emit(event, ...args);
  log({ event: 'emitted', seq: n, name: event, id, room_id: roomId, sockets: sockets.length });
  for (const socket of sockets) {
    // The callback of a packet queued after the event runs once both are written out.
    socket.conn.sendPacket('noop', undefined, {}, () => log({ event: 'delivered', seq: n, sid: socket.id }));
  }
}

function createRoom(phone, name) {
  const room = {
    ...seed.room(phone, name),
    messages: [],
    overrides: {}, // per-room rest_shape / rest_delay_ms / rest_fail
  };
  rooms.set(room.id, room);
  roomByPhone.set(phone, room.id);
  const { messages, overrides, ...stored } = room;
  persist({ room: stored });
  return room;
}

function saveMessage(room, userId, text) {
  const msg = seed.message(room.id, userId, text);
  room.messages.push(msg);
  room.updated_at = msg.created_at;
  persist({ message: msg });
  return msg;
}

// What GET /rooms/:id answers, in the configured shape of the last message.
function restRoom(room, shape) {
  const last = room.messages.length ? room.messages[room.messages.length - 1] : null;
  return seed.restRoom(room, shape, last, room.messages.length);
}

function restKnobs(room) {
  const knobs = { ...config };
  for (const key of KNOBS) {
    if (room && room.overrides[key] !== undefined) knobs[key] = room.overrides[key];
  }
  return knobs;
}

// ---------------------------------------------------------------- HTTP plumbing

function validateKnobs(body) {
  if (body.rest_shape !== undefined && !REST_SHAPES.has(body.rest_shape)) {
    throw new HttpError(400, 'rest_shape must be "flat" or "nested"');
  }
  if (body.rest_fail !== undefined && !REST_FAILS.has(body.rest_fail)) {
    throw new HttpError(400, 'rest_fail must be null, "500", "hang" or "garbage"');
  }
  if (body.rest_body !== undefined && !REST_BODIES.has(body.rest_body)) {
    throw new HttpError(400, 'rest_body must be null, "data_list", "data_null", "data_string" or "body_list"');
  }
  if (body.rest_patch !== undefined && body.rest_patch !== null && (typeof body.rest_patch !== 'object' || Array.isArray(body.rest_patch))) {
    throw new HttpError(400, 'rest_patch must be an object or null');
  }
  if (body.rest_delay_ms !== undefined && !(Number.isFinite(body.rest_delay_ms) && body.rest_delay_ms >= 0)) {
    throw new HttpError(400, 'rest_delay_ms must be a number >= 0');
  }
}

// ---------------------------------------------------------------- socket.io

// TLS_CERT and TLS_KEY (PEM files): the same server over https.
const tls = process.env.TLS_CERT
  ? { cert: fs.readFileSync(process.env.TLS_CERT), key: fs.readFileSync(process.env.TLS_KEY) }
  : null;
const httpServer = tls ? https.createServer(tls, handler(handle)) : http.createServer(handler(handle));

const io = new Server(httpServer, { cors: { origin: '*' } });

let gateOpen = process.env.GATE !== 'closed';
const revoked = new Set(); // tokens /me refuses (POST /_control/me {"revoke"})
let meSilent = false; // /me answers nothing (POST /_control/me {"silent"})
io.use((socket, next) => (gateOpen ? next() : next(new Error('not accepting connections yet'))));

io.on('connection', (socket) => {
  totalConnections += 1;
  log({ event: 'connection', sid: socket.id, total: totalConnections });
  for (let i = connectionWaiters.length - 1; i >= 0; i--) {
    if (totalConnections >= connectionWaiters[i].count) {
      connectionWaiters[i].resolve();
      connectionWaiters.splice(i, 1);
    }
  }

  socket.onAny((event, ...args) => {
    const hasAck = args.length > 0 && typeof args[args.length - 1] === 'function';
    const record = {
      sid: socket.id,
      event,
      args: hasAck ? args.slice(0, -1) : args,
      has_ack: hasAck,
      token: (socket.handshake.auth && socket.handshake.auth.token) || null, // who sent it
    };
    clientEvents.push(record);
    log({ ...record, event: 'client_event', name: event });
  });

  seed.roomEvents(socket, (action, roomId) => {
    const count = io.of('/').adapter.rooms.get(`room:${roomId}`)?.size || 0;
    log({ event: `room:${action}`, sid: socket.id, room_id: roomId, count });
  });

  socket.on('echo', (...args) => {
    const ack = args.length > 0 && typeof args[args.length - 1] === 'function' ? args.pop() : null;
    if (ack) ack(...args);
  });

  socket.on('disconnect', (reason) => {
    log({ event: 'disconnect', sid: socket.id, reason, connected: io.of('/').sockets.size });
  });
});

function emitMessage(room, msg, times) {
  for (let i = 0; i < times; i++) {
    io.to(`room:${room.id}`).emit('room:new_message', msg);
    broadcast('new_message', msg.id, room.id, msg);
  }
}

// A WhatsApp webhook: ensureRoom() then handleIncomingMessage(), with fault knobs.
async function customer(body) {
  const phone = body.phone;
  if (typeof phone !== 'string' || !phone) throw new HttpError(400, 'phone (string) required');
  if (!(body.name === null || body.name === undefined || typeof body.name === 'string')) {
    throw new HttpError(400, 'name must be a string or null');
  }
  const order = body.order === undefined ? 'room_first' : body.order;
  if (order !== 'room_first' && order !== 'message_first') {
    throw new HttpError(400, 'order must be "room_first" or "message_first"');
  }
  validateKnobs(body);
  const text = typeof body.text === 'string' ? body.text : 'Hello from customer';
  const roomEvents = body.drop_room_event ? 0 : body.duplicate_room ? 2 : 1;
  const messageEvents = body.drop_message_event ? 0 : body.duplicate_message ? 2 : 1;
  const messageDelay = Number(body.message_event_delay_ms) || 0;
  // Not in the seed: time between new_room and saving the first message (room_first only),
  // so a REST read in between sees the room without its message, as it can in production.
  const gap = Number(body.room_gap_ms) || 0;

  let room = roomByPhone.has(phone) ? rooms.get(roomByPhone.get(phone)) : null;
  const isNew = !room;
  if (isNew) room = createRoom(phone, body.name === undefined ? `Customer ${phone}` : body.name);
  for (const key of KNOBS) {
    if (body[key] !== undefined) room.overrides[key] = body[key];
  }

  const emitRoom = () => {
    const payload = seed.newRoomPayload(room);
    for (let i = 0; i < roomEvents; i++) broadcast('new_room', room.id, room.id, payload);
  };

  if (isNew && order === 'room_first') {
    emitRoom();
    if (gap > 0) await sleep(gap);
  }
  const msg = saveMessage(room, null, text);
  if (messageDelay > 0) await sleep(messageDelay);
  emitMessage(room, msg, messageEvents);
  if (isNew && order === 'message_first') emitRoom();

  log({ event: 'customer', room_id: room.id, message_id: msg.id, new_room: isNew, order });
  return { room_id: room.id, message_id: msg.id, new_room: isNew };
}

// ---------------------------------------------------------------- REST + control routes

const PAD_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789 éü✓漢字🙂';

function burstPad(n, size) {
  const chars = [...PAD_ALPHABET];
  let pad = '';
  for (let i = 0; pad.length < size; i++) pad += chars[(n + i) % chars.length];
  return pad.slice(0, size);
}

function charSum(text) {
  let sum = 0;
  for (let i = 0; i < text.length; i++) sum = (sum + text.charCodeAt(i)) % 1000000007;
  return sum;
}

// ---------------------------------------------------------------- plain REST routes

function withCors(req, res) {
  const origin = process.env.CORS_ORIGIN;
  if (!origin || req.headers.origin !== origin) return false;
  res.setHeader('access-control-allow-origin', origin);
  res.setHeader('access-control-allow-credentials', 'true');
  res.setHeader('vary', 'Origin');
  if (req.method === 'OPTIONS' && req.headers['access-control-request-method']) {
    res.writeHead(204, {
      'access-control-allow-methods': 'GET, POST, PUT, PATCH, DELETE',
      'access-control-allow-headers': req.headers['access-control-request-headers'] || '',
      'access-control-max-age': '600',
    });
    res.end();
    return true;
  }
  return false;
}

async function plainRest(req, res, url) {
  const path = url.pathname;
  const method = req.method;
  if ((method === 'GET' || method === 'HEAD') && path === '/files/download') {
    const bytes = Number(url.searchParams.get('bytes')) || 0;
    await download(req, res, bytes, url.searchParams.get('chunked') === '1');
    return true;
  }
  if (method === 'POST' && path === '/uploads') {
    send(res, 201, await describeUpload(req));
    return true;
  }
  if (method === 'GET' && path === '/slow') {
    const ms = Number(url.searchParams.get('ms')) || 0;
    res.on('close', () => { if (!res.writableFinished) log({ event: 'slow_abandoned', ms }); });
    log({ event: 'slow_started', ms });
    await sleep(ms);
    if (!res.destroyed) send(res, 200, { slept_ms: ms });
    return true;
  }
  if (method === 'GET' && path === '/fail') { send(res, 500, { error: 'internal server error' }); return true; }
  if (method === 'GET' && path === '/redirect') {
    const base = url.searchParams.get('to') === 'absolute' ? `http://${req.headers.host}` : '';
    res.writeHead(302, { location: `${base}/rooms?from=redirect`, 'content-length': '0' });
    res.end();
    return true;
  }
  if (method === 'GET' && path === '/cookies/set') {
    res.setHeader('set-cookie', ['session=s3cr3t; Path=/; HttpOnly; SameSite=Lax', 'theme=dark; Path=/']);
    send(res, 200, { ok: true });
    return true;
  }
  if (method === 'GET' && path === '/me') {
    if (meSilent) return true; // no answer at all, until /_control/me says otherwise
    const cookie = /(?:^|;\s*)session=([^;]+)/.exec(req.headers.cookie || '');
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization || '');
    if (!cookie && !bearer) { send(res, 401, { error: 'not signed in' }); return true; }
    if (bearer && revoked.has(bearer[1])) { send(res, 401, { error: 'signed out' }); return true; }
    send(res, 200, { session: cookie ? cookie[1] : null, token: bearer ? bearer[1] : null });
    return true;
  }
  if (method === 'GET' && path === '/gzip') {
    const body = zlib.gzipSync(JSON.stringify({ compressed: true, filler: 'abc'.repeat(1000) }));
    res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': String(body.length) });
    res.end(body);
    return true;
  }
  if (method === 'GET' && path === '/huge-header') {
    // A session cookie as big as some identity providers make them.
    const size = Number(url.searchParams.get('bytes')) || 9000;
    res.setHeader('set-cookie', `big=${'x'.repeat(size)}; Path=/`);
    send(res, 200, { header_bytes: size });
    return true;
  }
  if (method === 'GET' && path === '/broken') {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(1024 * 1024) });
    res.write(PATTERN.subarray(0, 64 * 1024), () => res.destroy());
    return true;
  }
  if (method === 'GET' && (path === '/app' || path === '/app/')) {
    const page = fs.readFileSync(`${__dirname}/solusi3.html`);
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': String(page.length) });
    res.end(page);
    return true;
  }
  if (path === '/echo') {
    const body = [];
    for await (const chunk of req) body.push(chunk);
    send(res, 200, {
      method, url: req.url, http_version: req.httpVersion, headers: req.rawHeaders,
      body_bytes: Buffer.concat(body).length,
    });
    return true;
  }
  return false;
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://stub');
  const path = url.pathname;
  const method = req.method;

  if (withCors(req, res)) return;
  if (await plainRest(req, res, url)) return;
  let m;
  if (method === 'GET' && (m = path.match(/^\/rooms\/([^/]+)$/))) {
    const roomId = decodeURIComponent(m[1]);
    const room = rooms.get(roomId);
    // The tests read the truth with this header: no knobs, not counted.
    if (req.headers['x-e2e-truth']) {
      if (!room) return send(res, 404, { error: 'not found' });
      return send(res, 200, { data: restRoom(room, restKnobs(room).rest_shape) });
    }
    restCalls[roomId] = (restCalls[roomId] || 0) + 1;
    log({ event: 'rest', room_id: roomId, n: restCalls[roomId], path: req.url });
    const knobs = restKnobs(room);
    if (knobs.rest_delay_ms > 0) await sleep(knobs.rest_delay_ms);
    if (knobs.rest_fail === 'hang') return; // never answer
    if (knobs.rest_fail === '500') return send(res, 500, { error: 'internal server error' });
    if (knobs.rest_fail === 'garbage') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end('not json{');
    }
    if (!room) return send(res, 404, { error: 'not found' });
    const data = { ...restRoom(room, knobs.rest_shape), ...(knobs.rest_patch || {}) };
    if (knobs.rest_body === 'data_list') return send(res, 200, { data: [data] });
    if (knobs.rest_body === 'data_null') return send(res, 200, { data: null });
    if (knobs.rest_body === 'data_string') return send(res, 200, { data: JSON.stringify(data) });
    if (knobs.rest_body === 'body_list') return send(res, 200, [data]);
    return send(res, 200, { data });
  }
  if (method === 'GET' && path === '/rooms') {
    return send(res, 200, { data: [...rooms.values()].map((r) => restRoom(r, restKnobs(r).rest_shape)) });
  }
  if (method === 'GET' && path === '/messages') {
    const room = rooms.get(url.searchParams.get('room_id'));
    return send(res, 200, { messages: room ? room.messages : [] });
  }

  if (method === 'POST' && path === '/_control/config') {
    const body = await readJson(req);
    validateKnobs(body);
    for (const key of KNOBS) {
      if (body[key] !== undefined) config[key] = body[key];
    }
    return send(res, 200, { config });
  }
  if (method === 'POST' && path === '/_control/customer') {
    return send(res, 200, await customer(await readJson(req)));
  }
  if (method === 'POST' && path === '/_control/agent-reply') {
    const body = await readJson(req);
    const room = rooms.get(body.room_id);
    if (!room) throw new HttpError(404, 'no such room');
    const msg = saveMessage(room, AGENT_ID, typeof body.text === 'string' ? body.text : 'Hello from agent');
    emitMessage(room, msg, 1);
    return send(res, 200, { message_id: msg.id });
  }
  if (method === 'POST' && path === '/_control/emit') {
    const body = await readJson(req);
    if (typeof body.event !== 'string') throw new HttpError(400, 'event (string) required');
    if (Number(body.nest) > 0) {
      // One argument nested `nest` levels deep ({"a": [...]}), built here.
      let value = 'bottom';
      for (let i = 0; i < Number(body.nest); i++) value = { a: [value] };
      io.emit(body.event, value);
      return send(res, 200, { ok: true });
    }
    broadcast(body.event, null, null, ...(Array.isArray(body.args) ? body.args : []));
    return send(res, 200, { ok: true });
  }
  if (method === 'POST' && path === '/_control/emit-batch') {
    // [{event, args}, ...]: each `io.emit(event, ...args)`, in order, in one tick.
    const body = await readJson(req);
    const events = Array.isArray(body.events) ? body.events : [];
    for (const item of events) io.emit(item.event, ...(Array.isArray(item.args) ? item.args : []));
    return send(res, 200, { emitted: events.length });
  }
  if (method === 'POST' && path === '/_control/burst') {
    // `count` events in one tick (or `interval_ms` apart), {n, pad, sum} with n from `start`: pad of sizes[n % sizes.length] characters
    // (some of them beyond ASCII), sum of its char codes, for the browsers to check.
    const body = await readJson(req);
    const count = Number(body.count) || 0;
    const start = Number(body.start) || 0;
    const sizes = Array.isArray(body.sizes) && body.sizes.length ? body.sizes : [16];
    const event = typeof body.event === 'string' ? body.event : 'test:seq';
    const interval = Number(body.interval_ms) || 0;
    for (let n = start; n < start + count; n++) {
      if (interval > 0 && n > start) await sleep(interval);
      const pad = burstPad(n, Number(sizes[n % sizes.length]));
      io.emit(event, { n, pad, sum: charSum(pad) });
    }
    return send(res, 200, { emitted: count });
  }
  if (method === 'POST' && path === '/_control/me') {
    const body = await readJson(req);
    if (body.revoke) revoked.add(body.revoke);
    if (body.silent !== undefined) meSilent = body.silent;
    return send(res, 200, { ok: true });
  }
  if (method === 'POST' && path === '/_control/accept') {
    const body = await readJson(req);
    gateOpen = body.open !== false;
    log({ event: gateOpen ? 'accepting' : 'refusing' });
    return send(res, 200, { ok: true });
  }
  if (method === 'POST' && path === '/_control/load') {
    startLoad(await readJson(req));
    return send(res, 200, { ok: true });
  }
  if (method === 'POST' && path === '/_control/load-stop') {
    stopLoad();
    return send(res, 200, load.totals);
  }
  if (method === 'POST' && path === '/_control/kick') {
    const kicked = io.of('/').sockets.size;
    io.disconnectSockets(true);
    log({ event: 'kick', kicked });
    return send(res, 200, { kicked });
  }
  if (method === 'GET' && path === '/_control/wait-connections') {
    const count = Number(url.searchParams.get('count')) || 1;
    if (totalConnections < count) {
      await new Promise((resolve) => connectionWaiters.push({ count, resolve }));
    }
    return send(res, 200, { total: totalConnections });
  }
  if (method === 'GET' && path === '/_control/rooms') {
    return send(res, 200, { rooms: [...rooms.keys()] });
  }
  if (method === 'GET' && path === '/_control/joined') {
    const roomId = url.searchParams.get('room_id');
    const members = io.of('/').adapter.rooms.get(`room:${roomId}`);
    return send(res, 200, { room_id: roomId, count: members ? members.size : 0 });
  }
  if (method === 'GET' && path === '/_control/client-events') {
    return send(res, 200, { events: clientEvents });
  }
  if (method === 'GET' && path === '/_control/rest-calls') {
    return send(res, 200, restCalls);
  }
  if (method === 'GET' && path === '/_control/connections') {
    return send(res, 200, { total: totalConnections, connected: io.of('/').sockets.size });
  }
  return send(res, 404, { error: 'not found' });
}

// ---------------------------------------------------------------- steady load

const load = { timer: null, ticks: 0, totals: { messages: 0, new_rooms: 0 } };

async function loadTick(newRoomEvery) {
  load.ticks += 1;
  const recent = [...rooms.values()].slice(-20);
  if (load.ticks % newRoomEvery === 1 || recent.length === 0) {
    // A phone no earlier run of the stub used: this pid's, numbered.
    const phone = `6288${String(process.pid).padStart(7, '0')}${String(load.ticks).padStart(5, '0')}`;
    await customer({ phone, name: `Pelanggan ${phone.slice(-6)}`, text: `halo ${load.ticks}` });
    load.totals.new_rooms += 1;
  } else {
    const room = recent[load.ticks % recent.length];
    emitMessage(room, saveMessage(room, null, `pesan ${process.pid}-${load.ticks}`), 1);
  }
  load.totals.messages += 1;
}

function startLoad(options) {
  stopLoad();
  const interval = Number(options.interval_ms) || 50;
  const newRoomEvery = Math.max(1, Number(options.new_room_every) || 4);
  load.timer = setInterval(() => loadTick(newRoomEvery).catch((err) => log({ event: 'load_failed', error: String(err) })), interval);
}

function stopLoad() {
  if (load.timer) clearInterval(load.timer);
  load.timer = null;
}

loadStore();
if (process.env.LOAD) startLoad(JSON.parse(process.env.LOAD));

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

httpServer.listen(Number(process.env.PORT || 0), process.env.HOST || '127.0.0.1', () => {
  log({ event: 'listening', port: httpServer.address().port });
});
