#!/usr/bin/env node
// Smoke test of the running container image (.ci/image): a socket.io-client browser connects
// to enricher's public address, the backend stub is told a new customer wrote, and the
// browser must get one `new_room_complete` with the customer's name and first message.
//
//   node tests/image/smoke.js ENRICHER_URL BACKEND_URL [TIMEOUT_MS]
//
// Exit 0 on that snapshot; 1 on a wrong one, a connection error or the timeout.
'use strict';

const path = require('path');
const { io } = require(path.join(__dirname, '..', 'e2e', 'node', 'node_modules', 'socket.io-client'));

const [enricherUrl, backendUrl, timeoutArg] = process.argv.slice(2);
if (!enricherUrl || !backendUrl) {
  console.error('usage: smoke.js ENRICHER_URL BACKEND_URL [TIMEOUT_MS]');
  process.exit(2);
}
const timeoutMs = Number(timeoutArg) || 15000;
const customer = { phone: '628111', name: 'Budi', text: 'halo' };

function finish(code, message) {
  (code === 0 ? console.log : console.error)(`smoke: ${message}`);
  socket.close();
  process.exit(code);
}

const timer = setTimeout(
  () => finish(1, `no new_room_complete within ${timeoutMs} ms from ${enricherUrl}`),
  timeoutMs,
);
timer.unref();

const socket = io(enricherUrl, { transports: ['websocket'], reconnection: false, timeout: 5000 });

socket.on('connect_error', (err) => finish(1, `cannot connect to ${enricherUrl}: ${err.message}`));

socket.on('connect', async () => {
  try {
    const res = await fetch(`${backendUrl}/_control/customer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(customer),
    });
    if (!res.ok) finish(1, `backend /_control/customer answered ${res.status}: ${await res.text()}`);
  } catch (err) {
    finish(1, `backend /_control/customer failed: ${err.message}`);
  }
});

socket.on('new_room_complete', (room) => {
  const name = room && room.leads_info ? room.leads_info.name : undefined;
  const text = room ? room.last_message_text : undefined;
  if (name === customer.name && text === customer.text) {
    finish(0, `new_room_complete ok: room ${room.room_id}, name ${name}, last message "${text}", enrichment ${room.enrichment}`);
  } else {
    finish(1, `unexpected new_room_complete: ${JSON.stringify(room)}`);
  }
});
