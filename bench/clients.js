#!/usr/bin/env node
// A share of the benchmark's browsers: COUNT real socket.io-client v4 sockets in this one
// process (run.py starts several such processes so the load generator is not the bottleneck).
//
//   node clients.js URL COUNT [--id K] [--concurrency C] [--no-deflate] [--transports websocket]
//
// Each socket is its own connection (forceNew), websocket transport only, and offers
// permessage-deflate as browsers do (--no-deflate: it does not).
//
// Per socket it counts every stream message by `bench_seq` (so lost and duplicated
// deliveries are exact), and every `new_room_complete` / `new_room` by room id. Latency is
// receive time - `bench_t` (and, second, - `bench_due`), all CLOCK_MONOTONIC in ms
// (process.hrtime): the same clock in every process on the machine, so no offsets to
// estimate. Latencies go into a log-linear histogram (10 us steps below 10 ms, then 0.5 %
// steps), which run.py merges.
//
// stdout, one JSON object a line:
//   {"type":"connected","id":K,"count":N,"ms":..}     once every socket is connected
//   {"type":"progress","id":K,"recv":..,"lat_max":..,"connected":..,"t":..}  every second
//   {"type":"report",...}   answer to {"cmd":"report",...}
//   {"type":"error",...}
// stdin, one JSON object a line:
//   {"cmd":"report","seq_total":S,"rooms":{room_id:{"t_room":..,"t_done":..}}}
//   {"cmd":"churn","per_s":R}   sockets in turn leave their room and join a recent one
//   {"cmd":"close"}
'use strict';

const readline = require('readline');
const { monitorEventLoopDelay } = require('perf_hooks');
const { io } = require('socket.io-client');

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const url = process.argv[2];
const count = Number(process.argv[3]);
const id = Number(arg('--id', '0'));
const concurrency = Number(arg('--concurrency', '50'));
const deflate = !process.argv.includes('--no-deflate');
const transports = arg('--transports', 'websocket').split(',');
if (!url || !Number.isInteger(count) || count < 1) {
  process.stderr.write('usage: node clients.js URL COUNT [--id K] [--concurrency C] [--no-deflate]\n');
  process.exit(2);
}

function now() {
  return Number(process.hrtime.bigint() / 1000n) / 1000; // ms, CLOCK_MONOTONIC
}

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// ---------------------------------------------------------------- histogram

class Histogram {
  constructor() {
    this.buckets = new Map();
    this.n = 0;
    this.sum = 0;
    this.max = -Infinity;
    this.min = Infinity;
  }

  static bucket(ms) {
    if (ms < 10) return ms <= 0 ? 0 : Math.floor(ms * 100);
    return 1000 + Math.floor(Math.log(ms / 10) / Math.log(1.005));
  }

  add(ms) {
    const b = Histogram.bucket(ms);
    this.buckets.set(b, (this.buckets.get(b) || 0) + 1);
    this.n += 1;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
    if (ms < this.min) this.min = ms;
  }

  toJSON() {
    return {
      n: this.n,
      sum: this.sum,
      max: this.n ? this.max : null,
      min: this.n ? this.min : null,
      buckets: Object.fromEntries(this.buckets),
    };
  }
}

// ---------------------------------------------------------------- per-process state

const SLOT_MS = 100;
const stats = {
  recv: 0, // stream messages received (all phases)
  firstMessages: 0, // first messages of new rooms, as new_message
  other: {}, // other events by name
  roomMessages: 0, // room:new_message (only in the soak's churn)
  disconnects: 0,
  connectErrors: 0,
  latMaxSince: 0, // largest latency since the last progress line
};
const latency = new Histogram(); // stream messages of phase 1: receive - bench_t (emit)
const latencyDue = new Histogram(); // the same from bench_due (the schedule)
const slots = new Map(); // floor(t / SLOT_MS) -> stream deliveries received then (all phases)
const allSlots = new Map(); // floor(t / SLOT_MS) -> events of any kind received then
const roomTimes = { new_room_complete: new Map(), new_room: new Map() }; // room_id -> [recv t]
const recentRooms = []; // the last rooms this process heard of, for the soak's joins
function noteRoom(roomId) {
  if (recentRooms.length >= 100) recentRooms.shift();
  recentRooms.push(roomId);
}

const sockets = [];

class Client {
  constructor(index) {
    this.index = index;
    this.seen = new Uint8Array(1024); // bench_seq -> times received
    this.rooms = { new_room_complete: new Map(), new_room: new Map() }; // room_id -> count
    this.firstIds = new Map(); // first message id -> count
    this.joined = null;
    this.socket = null;
  }

  connect() {
    return new Promise((resolve) => {
      const socket = io(url, {
        forceNew: true,
        transports,
        reconnection: false,
        timeout: 60000,
        perMessageDeflate: deflate ? { threshold: 1024 } : false,
      });
      this.socket = socket;
      let settled = false;
      socket.on('connect', () => {
        if (!settled) {
          settled = true;
          resolve(true);
        }
      });
      socket.on('connect_error', (err) => {
        stats.connectErrors += 1;
        out({ type: 'error', id, error: `connect_error: ${err && err.message}` });
        if (!settled) {
          settled = true;
          resolve(false);
        }
      });
      socket.on('disconnect', (reason) => {
        stats.disconnects += 1;
        out({ type: 'disconnected', id, socket: this.index, reason });
      });
      socket.on('new_message', (m) => this.onMessage(m));
      socket.on('new_room_complete', (room) => this.onRoom('new_room_complete', room));
      socket.on('new_room', (room) => this.onRoom('new_room', room));
      socket.on('room:new_message', () => {
        stats.roomMessages += 1;
      });
      socket.onAny((event) => {
        const slot = Math.floor(now() / SLOT_MS);
        allSlots.set(slot, (allSlots.get(slot) || 0) + 1);
        if (event === 'new_message' || event === 'new_room_complete' || event === 'new_room') return;
        if (event === 'room:new_message') return;
        stats.other[event] = (stats.other[event] || 0) + 1;
      });
    });
  }

  onMessage(m) {
    const t = now();
    if (!m || typeof m !== 'object') {
      stats.other.bad_new_message = (stats.other.bad_new_message || 0) + 1;
      return;
    }
    if (m.bench_first) {
      stats.firstMessages += 1;
      this.firstIds.set(m.id, (this.firstIds.get(m.id) || 0) + 1);
      return;
    }
    const seq = m.bench_seq;
    if (!Number.isInteger(seq) || seq < 0) {
      stats.other.unstamped_new_message = (stats.other.unstamped_new_message || 0) + 1;
      return;
    }
    if (seq >= this.seen.length) {
      let size = this.seen.length;
      while (size <= seq) size *= 2;
      const bigger = new Uint8Array(size);
      bigger.set(this.seen);
      this.seen = bigger;
    }
    if (this.seen[seq] < 255) this.seen[seq] += 1;
    stats.recv += 1;
    const slot = Math.floor(t / SLOT_MS);
    slots.set(slot, (slots.get(slot) || 0) + 1);
    const lat = t - m.bench_t;
    if (lat > stats.latMaxSince) stats.latMaxSince = lat;
    if (stats.recv % 997 === 0) noteRoom(m.room_id);
    if (m.bench_phase === 1) {
      latency.add(lat);
      if (typeof m.bench_due === 'number') latencyDue.add(t - m.bench_due);
    }
  }

  onRoom(event, room) {
    const t = now();
    const roomId = room && room.room_id;
    if (typeof roomId !== 'string') return;
    this.rooms[event].set(roomId, (this.rooms[event].get(roomId) || 0) + 1);
    let times = roomTimes[event].get(roomId);
    if (!times) {
      roomTimes[event].set(roomId, (times = []));
      noteRoom(roomId);
    }
    times.push(t);
  }
}

// ---------------------------------------------------------------- connect

const loopDelay = monitorEventLoopDelay({ resolution: 10 });

async function connectAll() {
  const started = now();
  for (let i = 0; i < count; i++) sockets.push(new Client(i));
  let next = 0;
  let ok = 0;
  async function worker() {
    while (next < sockets.length) {
      const c = sockets[next++];
      if (await c.connect()) ok += 1;
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
  out({ type: 'connected', id, count: ok, failed: count - ok, ms: now() - started });
  loopDelay.enable();
  setInterval(() => {
    out({
      type: 'progress',
      id,
      t: now(),
      recv: stats.recv,
      lat_max: stats.latMaxSince,
      connected: sockets.filter((c) => c.socket && c.socket.connected).length,
      disconnects: stats.disconnects,
    });
    stats.latMaxSince = 0;
  }, 1000).unref();
}

// ---------------------------------------------------------------- report

function report(cmd) {
  const seqTotal = Number(cmd.seq_total) || 0;
  const roomTable = cmd.rooms || {};
  let lost = 0;
  let duplicated = 0;
  let expected = 0;
  let socketsWithLoss = 0;
  for (const c of sockets) {
    let lostHere = 0;
    for (let s = 0; s < seqTotal; s++) {
      const n = s < c.seen.length ? c.seen[s] : 0;
      if (n === 0) lostHere += 1;
      else if (n > 1) duplicated += n - 1;
    }
    // Anything counted past seq_total was not emitted by this run: count it as duplicated.
    for (let s = seqTotal; s < c.seen.length; s++) duplicated += c.seen[s];
    expected += seqTotal;
    lost += lostHere;
    if (lostHere) socketsWithLoss += 1;
  }
  // New rooms: exactly one of each event per socket, for every room the run created.
  const rooms = {};
  for (const event of ['new_room_complete', 'new_room']) {
    let got = 0;
    let missing = 0;
    let dup = 0;
    let unknown = 0;
    for (const c of sockets) {
      for (const roomId of Object.keys(roomTable)) {
        const n = c.rooms[event].get(roomId) || 0;
        if (n === 0) missing += 1;
        else {
          got += 1;
          if (n > 1) dup += n - 1;
        }
      }
      for (const roomId of c.rooms[event].keys()) if (!(roomId in roomTable)) unknown += 1;
    }
    const fromRoom = new Histogram(); // receive - backend's new_room emit
    const fromDone = new Histogram(); // receive - the later of first message emit and REST answer
    for (const [roomId, times] of roomTimes[event]) {
      const r = roomTable[roomId];
      if (!r || r.phase !== 1) continue;
      for (const t of times) {
        fromRoom.add(t - r.t_room);
        if (r.t_done !== null && r.t_done !== undefined) fromDone.add(t - r.t_done);
      }
    }
    rooms[event] = { got, missing, duplicated: dup, unknown, from_room: fromRoom, from_done: fromDone };
  }
  let firstDup = 0;
  for (const c of sockets) for (const n of c.firstIds.values()) if (n > 1) firstDup += n - 1;
  out({
    type: 'report',
    id,
    sockets: sockets.length,
    connected: sockets.filter((c) => c.socket && c.socket.connected).length,
    disconnects: stats.disconnects,
    connect_errors: stats.connectErrors,
    expected,
    received: stats.recv,
    lost,
    duplicated,
    sockets_with_loss: socketsWithLoss,
    first_messages: stats.firstMessages,
    first_messages_duplicated: firstDup,
    room_messages: stats.roomMessages,
    churn: churnStats,
    other: stats.other,
    latency,
    latency_due: latencyDue,
    slots: Object.fromEntries(slots),
    all_slots: Object.fromEntries(allSlots),
    slot_ms: SLOT_MS,
    rooms,
    loop_delay_ms: {
      p50: loopDelay.percentile(50) / 1e6,
      p99: loopDelay.percentile(99) / 1e6,
      max: loopDelay.max / 1e6,
    },
  });
}

// ---------------------------------------------------------------- churn (soak)

// Browsers in turn leave the room they are in and join another one this process heard of
// lately (new rooms, and rooms of the stream): enricher joins and leaves backend rooms.
let churnTimer = null;
const churnStats = { joins: 0, leaves: 0 };
function churn(cmd) {
  if (churnTimer) clearInterval(churnTimer);
  const perSecond = Number(cmd.per_s) || 0;
  if (!perSecond) return;
  let k = 0;
  churnTimer = setInterval(() => {
    const c = sockets[k++ % sockets.length];
    if (!c.socket || !c.socket.connected || !recentRooms.length) return;
    if (c.joined) {
      c.socket.emit('room:leave', { room_id: c.joined });
      churnStats.leaves += 1;
    }
    c.joined = recentRooms[Math.floor(Math.random() * recentRooms.length)];
    c.socket.emit('room:join', { room_id: c.joined });
    churnStats.joins += 1;
  }, 1000 / perSecond);
}

function close(code) {
  for (const c of sockets) if (c.socket) c.socket.disconnect();
  setTimeout(() => process.exit(code), 200);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    return out({ type: 'error', id, error: `stdin line is not JSON: ${err.message}` });
  }
  if (cmd.cmd === 'report') report(cmd);
  else if (cmd.cmd === 'churn') churn(cmd);
  else if (cmd.cmd === 'close') close(0);
  else out({ type: 'error', id, error: `unknown command ${line}` });
  return undefined;
});
rl.on('close', () => close(0));
process.on('SIGTERM', () => close(0));

connectAll().catch((err) => {
  out({ type: 'error', id, error: String(err && err.stack) });
  process.exit(1);
});
