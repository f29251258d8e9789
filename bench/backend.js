#!/usr/bin/env node
// The benchmark's backend: the real `socket.io` v4 server (default options, as the seed's
// backend runs it), emitting what the seed's backend emits, on a timer:
//
//   - `new_message` (and `room:new_message` to `room:<id>`, as the seed's emitMessage does)
//     at `rate` per second to a pool of existing rooms, each stamped with
//     `bench_seq` (0, 1, 2, ... per run), `bench_t` (emit time), `bench_due` (the time
//     the schedule wanted it emitted) and `bench_phase` (0 warm-up, 1 measured);
//   - a new room `room_rate` times per second: `new_room` (the seed's minimal payload), then
//     its first `new_message` (`bench_first: true`), back to back, as ensureRoom() followed
//     by handleIncomingMessage();
//   - `GET /rooms/<id>` answers like the seed's REST API (flat last message by default);
//   - for the HTTP pass-through benchmark (bench/http): `GET /files/download?bytes=N`
//     streams N deterministic bytes (byte i is (i * 31 + 7) % 251, as the e2e stub's) with
//     backpressure, and `POST /uploads` answers the size and sha256 of the body it read.
//
// Times are CLOCK_MONOTONIC in milliseconds (process.hrtime), the clock every process on
// this machine shares: clients.js and run.py read the same one (see bench/README.md).
//
//   PORT=0 node backend.js   -> {"event":"listening","port":N} on stdout
//
// Control API (used by run.py):
//   POST /_bench/run   {rate, room_rate, warmup_s, duration_s, rest_shape}  starts a run
//   POST /_bench/stop  ends the current run now (an overloaded point is cut short)
//   GET  /_bench/result  the run's state, counters and room timings
//   GET  /_bench/connections  {connected}
//   GET  /_bench/rooms  {rooms: [the ids of the rooms that exist before a run]}
'use strict';

const http = require('http');
const crypto = require('crypto');
const { URL } = require('url');
const { Server } = require('socket.io');
// The seed's payloads, JSON over HTTP, downloads and uploads: the e2e stub's (the benchmark
// measures what the tests check).
const seed = require('../tests/e2e/node/seed');
const { HttpError, send, readJson, handler } = require('../tests/e2e/node/http-json');
const { download, describeUpload } = require('../tests/e2e/node/transfers');

function now() {
  return Number(process.hrtime.bigint() / 1000n) / 1000; // ms, CLOCK_MONOTONIC
}

function log(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const AGENT_ID = crypto.randomUUID();
const POOL_SIZE = 50; // rooms that exist before the run: the message stream goes to them

const rooms = new Map(); // room_id -> {room, last message, timings}
let phoneCounter = 0;

function createRoom(withLead) {
  const phone = '62812' + String(1000000 + phoneCounter++).padStart(7, '0');
  const room = {
    ...seed.room(phone, withLead ? `Customer ${phone}` : null),
    last: null,
    count: 0,
    bench: null, // timings of rooms created during a run
  };
  rooms.set(room.id, room);
  return room;
}

for (let i = 0; i < POOL_SIZE; i++) createRoom(true);
const pool = [...rooms.values()];

function makeMessage(room, userId, text) {
  const msg = seed.message(room.id, userId, text);
  room.last = msg;
  room.count += 1;
  room.updated_at = msg.created_at;
  return msg;
}

// ---------------------------------------------------------------- socket.io

const httpServer = http.createServer(handler(handle));

const io = new Server(httpServer, { cors: { origin: '*' } });

io.on('connection', (socket) => seed.roomEvents(socket));

// ---------------------------------------------------------------- the run

let run = null;

function newRun(body) {
  const rate = Number(body.rate);
  const roomRate = Number(body.room_rate === undefined ? 5 : body.room_rate);
  const warmup = Number(body.warmup_s === undefined ? 2 : body.warmup_s) * 1000;
  const duration = Number(body.duration_s) * 1000;
  if (!(rate > 0) || !(roomRate >= 0) || !(warmup >= 0) || !(duration > 0)) {
    throw new HttpError(400, 'rate > 0, room_rate >= 0, warmup_s >= 0, duration_s > 0 required');
  }
  const shape = body.rest_shape === 'nested' ? 'nested' : 'flat';
  const start = now() + 20; // a little ahead, so the first due times are not already late
  return {
    rate,
    roomRate,
    shape,
    start,
    measureFrom: start + warmup,
    end: start + warmup + duration,
    state: 'running',
    stoppedEarly: false,
    seq: 0,
    measured: { first_seq: null, last_seq: null, t_first: null, t_last: null, count: 0 },
    msgIndex: 0,
    roomIndex: 0,
    lags: [], // ms each emit was behind its due time
    fanout: [], // ms each io.emit('new_message') took (the fan-out in the direct path)
    rooms: [], // {room_id, phase, t_room, t_msg, t_rest}
    timers: [],
    connectedAtStart: io.of('/').sockets.size,
  };
}

function emitStreamMessage(r, due) {
  const seq = r.seq++;
  const room = pool[seq % pool.length];
  const msg = makeMessage(room, null, `Customer message ${seq}: is my loan application through yet?`);
  const t = now();
  const phase = t >= r.measureFrom ? 1 : 0;
  msg.bench_seq = seq;
  msg.bench_phase = phase;
  msg.bench_due = due; // when the schedule wanted it out: a busy backend emits late
  msg.bench_t = t;
  io.to(`room:${room.id}`).emit('room:new_message', msg);
  io.emit('new_message', msg);
  const done = now();
  r.lags.push(t - due);
  if (phase === 1) {
    r.fanout.push(done - t);
    const m = r.measured;
    if (m.first_seq === null) {
      m.first_seq = seq;
      m.t_first = t;
    }
    m.last_seq = seq;
    m.t_last = t;
    m.count += 1;
  }
}

function emitNewRoom(r) {
  const room = createRoom(true);
  const t_room = now();
  const phase = t_room >= r.measureFrom ? 1 : 0;
  io.emit('new_room', seed.newRoomPayload(room));
  const msg = makeMessage(room, null, 'Hello, I would like to ask about my loan');
  const t_msg = now();
  msg.bench_first = true;
  msg.bench_t = t_msg;
  io.to(`room:${room.id}`).emit('room:new_message', msg);
  io.emit('new_message', msg);
  room.bench = { room_id: room.id, phase, t_room, t_msg, t_rest: null, rest_calls: 0 };
  r.rooms.push(room.bench);
}

// A drift-free schedule: the i-th event is due at start + i / rate; a late timer emits
// every event that is due (and records how late it was) instead of slipping the schedule.
function schedule(r, rate, fire) {
  const period = 1000 / rate;
  let i = 0;
  const tick = () => {
    if (r.state !== 'running') return;
    const t = now();
    while (r.state === 'running') {
      const due = r.start + i * period;
      if (due > t) break;
      if (due >= r.end) {
        finish(r, false);
        return;
      }
      fire(due);
      i += 1;
    }
    if (r.state !== 'running') return;
    const next = r.start + i * period;
    if (next >= r.end) {
      const wait = Math.max(0, r.end - now());
      r.timers.push(setTimeout(() => finish(r, false), wait));
      return;
    }
    r.timers.push(setTimeout(tick, Math.max(0, next - now())));
  };
  r.timers.push(setTimeout(tick, Math.max(0, r.start - now())));
}

function finish(r, early) {
  if (r.state !== 'running') return;
  r.state = 'done';
  r.stoppedEarly = early;
  r.finishedAt = now();
  for (const t of r.timers) clearTimeout(t);
  r.timers = [];
  log({ event: 'run_done', seq_total: r.seq, early });
}

function quantiles(values) {
  if (!values.length) return { n: 0 };
  const s = Float64Array.from(values).sort();
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { n: s.length, p50: q(0.5), p99: q(0.99), max: s[s.length - 1] };
}

function result(r) {
  return {
    state: r.state,
    stopped_early: r.stoppedEarly,
    rate: r.rate,
    room_rate: r.roomRate,
    rest_shape: r.shape,
    t_start: r.start,
    t_measure_from: r.measureFrom,
    t_end: r.end,
    t_finished: r.finishedAt === undefined ? null : r.finishedAt,
    seq_total: r.seq,
    measured: r.measured,
    schedule_lag_ms: quantiles(r.lags),
    fanout_ms: quantiles(r.fanout),
    rooms: r.rooms,
    connected_at_start: r.connectedAtStart,
    connected: io.of('/').sockets.size,
  };
}

// ---------------------------------------------------------------- HTTP

async function handle(req, res) {
  const url = new URL(req.url, 'http://bench');
  const path = url.pathname;
  let m;
  if (req.method === 'GET' && (m = path.match(/^\/rooms\/([^/]+)$/))) {
    const room = rooms.get(decodeURIComponent(m[1]));
    if (!room) return send(res, 404, { error: 'not found' });
    const shape = run ? run.shape : 'flat';
    send(res, 200, { data: seed.restRoom(room, shape, room.last, room.count) });
    if (room.bench) {
      room.bench.rest_calls += 1;
      if (room.bench.t_rest === null) room.bench.t_rest = now(); // the answer is written
    }
    return undefined;
  }
  if (req.method === 'GET' && path === '/files/download') {
    return download(req, res, Number(url.searchParams.get('bytes')) || 0);
  }
  if (req.method === 'POST' && path === '/uploads') return send(res, 201, await describeUpload(req));
  if (req.method === 'POST' && path === '/_bench/run') {
    if (run && run.state === 'running') throw new HttpError(409, 'a run is under way');
    const r = newRun(await readJson(req));
    run = r;
    schedule(r, r.rate, (due) => emitStreamMessage(r, due));
    if (r.roomRate > 0) schedule(r, r.roomRate, () => emitNewRoom(r));
    log({ event: 'run_started', rate: r.rate, room_rate: r.roomRate });
    return send(res, 200, { ok: true, t_start: r.start, t_measure_from: r.measureFrom, t_end: r.end });
  }
  if (req.method === 'POST' && path === '/_bench/stop') {
    if (run) finish(run, true);
    return send(res, 200, { ok: true });
  }
  if (req.method === 'GET' && path === '/_bench/result') {
    if (!run) throw new HttpError(404, 'no run');
    return send(res, 200, result(run));
  }
  if (req.method === 'GET' && path === '/_bench/rooms') {
    return send(res, 200, { rooms: pool.map((room) => room.id) });
  }
  if (req.method === 'GET' && path === '/_bench/connections') {
    return send(res, 200, { connected: io.of('/').sockets.size });
  }
  if (req.method === 'POST' && path === '/_bench/agent-reply') {
    // Not used by the runner; handy when poking at the bench by hand.
    const body = await readJson(req);
    const room = rooms.get(body.room_id);
    if (!room) throw new HttpError(404, 'no such room');
    const msg = makeMessage(room, AGENT_ID, 'Hello from agent');
    io.emit('new_message', msg);
    return send(res, 200, { message_id: msg.id });
  }
  return send(res, 404, { error: 'not found' });
}

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

httpServer.listen(Number(process.env.PORT || 0), process.env.HOST || '127.0.0.1', () => {
  log({ event: 'listening', port: httpServer.address().port, pid: process.pid });
});
