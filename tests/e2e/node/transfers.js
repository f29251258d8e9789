'use strict';
// Downloads and uploads for the HTTP pass-through's tests (backend.js here) and its
// benchmark (bench/backend.js): a download is `total` bytes, byte i being
// (i * 31 + 7) % 251, streamed with backpressure; an upload is answered with its size and
// SHA-256 (and, for a multipart body up to 8 MiB, its parts).
const crypto = require('crypto');

const PATTERN_PERIOD = 251;
const PATTERN = Buffer.alloc(64 * 1024 + PATTERN_PERIOD);
for (let i = 0; i < PATTERN.length; i++) PATTERN[i] = (i * 31 + 7) % PATTERN_PERIOD;
const PARTS_UP_TO = 8 * 1024 * 1024;

// `chunked`: without Content-Length. A HEAD gets the headers only.
async function download(req, res, total, chunked = false) {
  const headers = { 'content-type': 'application/octet-stream', 'x-total-bytes': String(total) };
  if (!chunked) headers['content-length'] = String(total);
  res.writeHead(200, headers);
  if (req.method === 'HEAD') return res.end();
  for (let sent = 0; sent < total && !res.destroyed; ) {
    const size = Math.min(64 * 1024, total - sent);
    const start = sent % PATTERN_PERIOD;
    sent += size;
    if (!res.write(PATTERN.subarray(start, start + size))) {
      await new Promise((resolve) => {
        const done = () => { res.off('drain', done); res.off('close', done); resolve(); };
        res.on('drain', done);
        res.on('close', done);
      });
    }
  }
  return res.end();
}

// {bytes, sha256, content_type, parts}: what arrived.
async function describeUpload(req) {
  const type = req.headers['content-type'] || null;
  const multipart = Boolean(type && type.startsWith('multipart/form-data'));
  const hash = crypto.createHash('sha256');
  const kept = [];
  let size = 0;
  for await (const chunk of req) {
    hash.update(chunk);
    size += chunk.length;
    if (multipart && size <= PARTS_UP_TO) kept.push(chunk);
  }
  const answer = { bytes: size, sha256: hash.digest('hex'), content_type: type, parts: null };
  if (multipart && size <= PARTS_UP_TO) {
    const form = await new Response(Buffer.concat(kept), { headers: { 'content-type': type } }).formData();
    answer.parts = [];
    for (const [name, value] of form.entries()) {
      if (typeof value === 'string') answer.parts.push({ name, value });
      else {
        const bytes = Buffer.from(await value.arrayBuffer());
        answer.parts.push({ name, filename: value.name, type: value.type, bytes: bytes.length, sha256: crypto.createHash('sha256').update(bytes).digest('hex') });
      }
    }
  }
  return answer;
}

module.exports = { PATTERN, download, describeUpload };
