'use strict';
// The seed backend's records and payloads (docs/contract.md), for the end-to-end tests'
// backend (backend.js here) and the benchmark's (bench/backend.js): a room and a message as
// its database has them, the `new_room` payload of roomService.ensureRoom(), and what
// `GET /rooms/<id>` answers. Each backend keeps its own bookkeeping around them.
const crypto = require('crypto');

// Timestamps strictly increase across everything this process stamps, so "the last
// message" is never ambiguous even when two messages are saved in the same millisecond.
let lastStamp = 0;

function stamp() {
  const t = Math.max(Date.now(), lastStamp + 1);
  lastStamp = t;
  return new Date(t).toISOString();
}

// Stamps from now on come after `iso` (a record read back from a store).
function stampAfter(iso) {
  lastStamp = Math.max(lastStamp, Date.parse(iso));
}

// A room, created now; `name` a string gives it a lead of that name, anything else none.
function room(phone, name) {
  const now = stamp();
  return {
    id: crypto.randomUUID(),
    phone,
    title: 'Personal',
    created_at: now,
    updated_at: now,
    lead:
      typeof name === 'string'
        ? {
            id: crypto.randomUUID(),
            name,
            phone,
            outstanding: 50000000,
            loan_type: 'personal_loan',
            leads_status: 'cold',
            contact_status: 'contacted',
          }
        : null,
  };
}

// A text message in the room `roomId`, saved now: from the customer (`userId` null) or an
// agent. The `new_message` payload.
function message(roomId, userId, text) {
  const now = stamp();
  return {
    id: crypto.randomUUID(),
    room_id: roomId,
    user_id: userId,
    content_type: 'text',
    content_text: text,
    wa_message_id: 'wamid.' + crypto.randomBytes(12).toString('hex'),
    status: 'sent',
    reply_to_wa_message_id: null,
    reaction_emoji: null,
    reaction_to_wa_message_id: null,
    status_timestamp: null,
    media_type: null,
    media_id: null,
    gcs_filename: null,
    gcs_url: null,
    file_size: null,
    mime_type: null,
    original_filename: null,
    metadata: {},
    created_at: now,
    updated_at: now,
  };
}

// The `new_room` payload of the seed's roomService.ensureRoom(), exactly.
function newRoomPayload(room) {
  return {
    room_id: room.id,
    room_phone: room.phone,
    room_title: room.title,
    room_created_at: room.created_at,
    room_updated_at: room.updated_at,
    leads_info: room.lead ? { id: room.lead.id, phone: room.phone, name: room.lead.name } : null,
    unread_count: 0,
    last_message: null,
    participants: [],
  };
}

// What GET /rooms/:id answers (its `data`): `last` the room's last message (or null),
// `count` its messages (all unread: nobody reads in these backends), the last message
// flat or `nested`.
function restRoom(room, shape, last, count) {
  const data = {
    room_id: room.id,
    room_phone: room.phone,
    room_title: room.title,
    room_created_at: room.created_at,
    room_updated_at: room.updated_at,
    leads_info: room.lead ? { ...room.lead } : null,
    unread_count: count,
    message_count: count,
    participants: [],
  };
  if (shape === 'nested') {
    data.last_message = last
      ? {
          id: last.id,
          content_text: last.content_text,
          content_type: last.content_type,
          created_at: last.created_at,
          user_id: last.user_id,
        }
      : null;
  } else {
    data.last_message_text = last ? last.content_text : null;
    data.last_message_timestamp = last ? last.created_at : null;
    data.last_message_type = last ? last.content_type : null;
  }
  return data;
}

// The seed's `room:join` / `room:leave` {room_id} handlers on `socket`, acknowledged
// {ok, room_id} (or {ok: false, error}); `joined(action, roomId)`, if given, runs after
// each join or leave, before the ack.
function roomEvents(socket, joined) {
  const handler = (action) => (data, ack) => {
    const roomId = data && typeof data === 'object' ? data.room_id : undefined;
    if (typeof roomId === 'string' && roomId) {
      if (action === 'join') socket.join(`room:${roomId}`);
      else socket.leave(`room:${roomId}`);
      if (joined) joined(action, roomId);
      if (typeof ack === 'function') ack({ ok: true, room_id: roomId });
    } else if (typeof ack === 'function') {
      ack({ ok: false, error: 'room_id required' });
    }
  };
  socket.on('room:join', handler('join'));
  socket.on('room:leave', handler('leave'));
}

module.exports = { stampAfter, room, message, newRoomPayload, restRoom, roomEvents };
