'use strict';
// JSON over HTTP for the backends' control APIs (backend.js and crm.js here, and
// bench/backend.js): a JSON answer, a JSON body read, and the error that answers a request
// with its status.

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

// The request's body as JSON ({} when empty); an HttpError 400 when it is not JSON.
function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (!text.trim()) return resolve({});
      try {
        resolve(JSON.parse(text));
      } catch (err) {
        reject(new HttpError(400, 'body is not JSON: ' + err.message));
      }
    });
    req.on('error', reject);
  });
}

// A server whose requests go to `handle(req, res)` (async): a thrown HttpError answers with
// its status, any other error with 500 (or ends an answer already under way).
function handler(handle) {
  return (req, res) => {
    handle(req, res).catch((err) => {
      if (!res.headersSent) send(res, err.status || 500, { error: err.message });
      else res.end();
    });
  };
}

module.exports = { HttpError, send, readJson, handler };
