#!/usr/bin/env node
// The HTTP benchmark's load generator (bench/http runs it): one process, one JSON line per
// result on stdout.
//
//   node http-clients.js load URL --connections C --duration D [--warmup W]
//       C keep-alive connections, each sending its next request as soon as the last answer
//       is in (autocannon, no pipelining), first for W seconds not counted, then for D
//       seconds. Prints {"type":"measuring"} when the counted part starts, then
//       {"type":"load", requests, rps, cpu_s, latency_ms: {p50, p90, p99, max, mean}, errors,
//       timeouts, non_2xx, statuses, bytes}. autocannon keeps latencies in whole
//       milliseconds, so every answer's time (process.hrtime, µs resolution) is kept here.
//   node http-clients.js download URL --bytes N
//       one GET, the body streamed and hashed as it arrives: {"type":"download", bytes,
//       seconds, mb_per_s, status, sha256_ok}; byte i of the body must be (i * 31 + 7) % 251
//       (what bench/backend.js's /files/download sends).
//   node http-clients.js upload URL --bytes N
//       one POST of N bytes of that pattern, streamed with backpressure (Content-Length
//       set): {"type":"upload", bytes, seconds, mb_per_s, status, sha256_ok}, the answer's
//       size and sha256 (bench/backend.js's /uploads) checked against what was sent.
// MB is 10^6 bytes. The clock is the seconds from the first byte of the request leaving to
// the last byte of the answer arriving.
'use strict';

const crypto = require('crypto');
const http = require('http');
const autocannon = require('autocannon');

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function nowMs() {
  return Number(process.hrtime.bigint()) / 1e6;
}

function parseArgs(argv) {
  const [mode, url, ...rest] = argv;
  const opts = { mode, url, connections: 1, duration: 10, warmup: 2, bytes: 100e6 };
  for (let i = 0; i < rest.length; i += 2) {
    const key = rest[i].replace(/^--/, '');
    if (!(key in opts)) throw new Error(`unknown option ${rest[i]}`);
    opts[key] = Number(rest[i + 1]);
  }
  if (!['load', 'download', 'upload'].includes(mode) || !url) {
    throw new Error('usage: http-clients.js load|download|upload URL [--option value ...]');
  }
  return opts;
}

// ------------------------------------------------------------------ load (autocannon)

function cannon(url, connections, seconds, onResponse) {
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      { url, connections, duration: seconds, pipelining: 1, timeout: 10 },
      (err, result) => (err ? reject(err) : resolve(result)),
    );
    if (onResponse) instance.on('response', onResponse);
  });
}

function quantile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

async function load(opts) {
  if (opts.warmup > 0) await cannon(opts.url, opts.connections, opts.warmup, null);
  let times = new Float64Array(1 << 16);
  let n = 0;
  const statuses = {};
  const onResponse = (client, status, bytes, ms) => {
    if (n === times.length) {
      const bigger = new Float64Array(times.length * 2);
      bigger.set(times);
      times = bigger;
    }
    times[n++] = ms;
    statuses[status] = (statuses[status] || 0) + 1;
  };
  out({ type: 'measuring', t: nowMs() });
  const t0 = nowMs();
  const cpu0 = process.cpuUsage();
  const result = await cannon(opts.url, opts.connections, opts.duration, onResponse);
  const seconds = (nowMs() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const sorted = times.subarray(0, n).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i];
  const non2xx = Object.entries(statuses)
    .filter(([status]) => !status.startsWith('2'))
    .reduce((a, [, count]) => a + count, 0);
  out({
    type: 'load',
    t: nowMs(),
    connections: opts.connections,
    seconds,
    requests: n,
    rps: n / seconds,
    cpu_s: (cpu.user + cpu.system) / 1e6, // this process's, while counting
    latency_ms: {
      p50: quantile(sorted, 0.5),
      p90: quantile(sorted, 0.9),
      p99: quantile(sorted, 0.99),
      max: n ? sorted[n - 1] : null,
      mean: n ? sum / n : null,
    },
    errors: result.errors,
    timeouts: result.timeouts,
    non_2xx: non2xx,
    statuses,
    bytes: result.throughput.total,
  });
}

// ------------------------------------------------------------------ one big transfer

const PERIOD = 251;
const CHUNK = 64 * 1024;
const PATTERN = Buffer.alloc(CHUNK + PERIOD);
for (let i = 0; i < PATTERN.length; i++) PATTERN[i] = (i * 31 + 7) % PERIOD;

// The body as 64 KiB chunks, byte i being (i * 31 + 7) % 251.
function* chunks(total) {
  for (let sent = 0; sent < total; ) {
    const size = Math.min(CHUNK, total - sent);
    const start = sent % PERIOD;
    sent += size;
    yield PATTERN.subarray(start, start + size);
  }
}

function patternSha256(total) {
  const hash = crypto.createHash('sha256');
  for (const chunk of chunks(total)) hash.update(chunk);
  return hash.digest('hex');
}

function transferResult(type, bytes, t0, status, shaOk, extra = {}) {
  const seconds = (nowMs() - t0) / 1000;
  return { type, bytes, seconds, mb_per_s: bytes / 1e6 / seconds, status, sha256_ok: shaOk, ...extra };
}

function download(opts) {
  const expected = patternSha256(opts.bytes);
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    const req = http.get(`${opts.url}?bytes=${opts.bytes}`, (res) => {
      const hash = crypto.createHash('sha256');
      let bytes = 0;
      res.on('data', (chunk) => {
        hash.update(chunk);
        bytes += chunk.length;
      });
      res.on('end', () => {
        const ok = bytes === opts.bytes && hash.digest('hex') === expected;
        resolve(transferResult('download', bytes, t0, res.statusCode, ok));
      });
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

function upload(opts) {
  const expected = patternSha256(opts.bytes);
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    const req = http.request(
      opts.url,
      {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(opts.bytes) },
      },
      (res) => {
        const body = [];
        res.on('data', (chunk) => body.push(chunk));
        res.on('end', () => {
          let answer = {};
          try {
            answer = JSON.parse(Buffer.concat(body).toString('utf8'));
          } catch (err) {
            answer = { error: String(err) };
          }
          const ok = answer.bytes === opts.bytes && answer.sha256 === expected;
          resolve(transferResult('upload', opts.bytes, t0, res.statusCode, ok, { answer }));
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    const it = chunks(opts.bytes);
    const pump = () => {
      for (let next = it.next(); !next.done; next = it.next()) {
        if (!req.write(next.value)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

const opts = parseArgs(process.argv.slice(2));
const run = { load, download, upload }[opts.mode];
run(opts).then(
  (result) => {
    if (result) out(result);
  },
  (err) => {
    out({ type: 'error', error: String(err && err.stack ? err.stack : err) });
    process.exitCode = 1;
  },
);
