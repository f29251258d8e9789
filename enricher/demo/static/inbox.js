// The demo page: two inboxes built with the seed's own frontend handlers (seed/socket-events.md),
// one connected to the simulated backend, one to enricher, each checked against REST.
"use strict";

const SETTLE_MS = 3000; // a difference counts once it has lasted, unchanged, this long
const CHECK_MS = 1000;

// The seed's display chain; the real frontend shows "Unknown" when it gives nothing.
const displayName = (room) => room.leads_info?.name || room.room_title || room.room_phone || "Unknown";

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

// ---- the seed's handlers, as the backend team's document gives them -------------------------

// What the frontend does today (the "Frontend Should" of new_room and new_message).
function seedOriginalHandlers(socket, inbox) {
  socket.on("new_room", (data) => {
    inbox.setRooms((prev) => [data, ...prev]);
  });
  socket.on("new_message", (message) => {
    inbox.setRooms((prev) => prev.map((room) => {
      if (room.room_id === message.room_id) {
        return {
          ...room,
          last_message_text: message.content_text,
          last_message_timestamp: message.created_at,
          unread_count: room.room_id === inbox.currentRoomId ? 0 : room.unread_count + 1,
        };
      }
      return room;
    }));
  });
}

// What the seed recommends with a backend that sends new_room_complete (enricher does).
function seedRecommendedHandlers(socket, inbox) {
  socket.on("new_room_complete", (room) => {
    inbox.setRooms((prev) => [room, ...prev]);
  });
  socket.on("new_message", (message) => {
    inbox.setRooms((prev) => prev.map((r) =>
      r.room_id === message.room_id ? {
        ...r,
        last_message: {
          content_text: message.content_text,
          content_type: message.content_type,
          created_at: message.created_at,
        },
        unread_count: r.room_id === inbox.currentRoomId ? 0 : (r.unread_count || 0) + 1,
      } : r));
  });
}

// How each style's sidebar reads a room: the fields its handlers keep up to date.
const SIDEBAR_VIEWS = {
  flat: (room) => ({
    name: displayName(room),
    text: room.last_message_text ?? null,
    at: room.last_message_timestamp ?? null,
    unread: room.unread_count ?? null,
  }),
  nested: (room) => ({
    name: displayName(room),
    text: room.last_message?.content_text ?? null,
    at: room.last_message?.created_at ?? null,
    unread: room.unread_count ?? null,
  }),
};

// What a page refresh shows: GET /rooms/<id>, its last message nested or flat.
function restView(room) {
  return {
    name: displayName(room),
    text: room.last_message?.content_text ?? room.last_message_text ?? null,
    at: room.last_message?.created_at ?? room.last_message_timestamp ?? null,
    unread: room.unread_count ?? null,
  };
}

// ---- REST, the truth -------------------------------------------------------------------------

// GET /rooms/<id> for the rooms the page cares about, asked again only when a room changed
// (the demo backend's GET /rooms lists each room's version).
class RestMirror {
  constructor(baseUrl) {
    this.baseUrl = baseUrl;
    this.rooms = new Map(); // room_id -> {seq, version, view}
    this.listed = new Map(); // room_id -> seq, every room the backend has
  }

  async baseline() {
    return (await getJson(`${this.baseUrl}/rooms`)).last_seq;
  }

  async refresh(wanted) {
    const listing = await getJson(`${this.baseUrl}/rooms`);
    const stale = [];
    for (const { room_id: id, seq, version } of listing.data) {
      this.listed.set(id, seq);
      const known = this.rooms.get(id);
      if (wanted(id, seq) && (!known || known.version !== version)) stale.push({ id, seq });
    }
    await Promise.all(stale.map(({ id, seq }) => this.fetchRoom(id, seq)));
  }

  async fetchRoom(id, seq) {
    try {
      const body = await getJson(`${this.baseUrl}/rooms/${encodeURIComponent(id)}`);
      this.rooms.set(id, { seq, version: body.data.message_count, view: restView(body.data) });
    } catch (error) {
      // A failing or slow answer is the backend's chaos: ask again next round.
    }
  }
}

// ---- one inbox -------------------------------------------------------------------------------

class Inbox {
  constructor(root, { url, restUrl, handlers, style }) {
    this.root = root;
    this.restUrl = restUrl;
    this.view = SIDEBAR_VIEWS[style];
    this.rooms = [];
    this.messages = [];
    this.currentRoomId = null;
    this.opened = new Set(); // rooms opened here: read, so their unread count is not compared
    this.baseline = null; // rooms with a higher seq were created after this inbox connected
    this.differing = new Map(); // room_id -> Map(kind -> {signature, since})
    this.mismatches = [];
    this.checked = 0;
    this.renderQueued = false;
    this.chatChanged = false; // the chat is drawn again only when it changed (keeps its scroll)
    this.socket = io(url);
    handlers(this.socket, this);
    this.socket.on("room:new_message", (message) => {
      if (message.room_id === this.currentRoomId) this.appendMessage(message);
    });
    this.socket.on("connect", async () => {
      this.baseline = null;
      this.baseline = await mirror.baseline();
    });
    root.querySelector(".rooms").addEventListener("click", (event) => {
      const item = event.target.closest("[data-room-id]");
      if (item) this.openRoom(item.dataset.roomId);
    });
    root.querySelector(".chat").addEventListener("click", (event) => {
      if (event.target.closest(".close")) this.closeRoom();
    });
  }

  // React-style state setters, as the seed's handlers expect them.
  setRooms(update) {
    this.rooms = update(this.rooms);
    this.queueRender();
  }

  setMessages(update) {
    this.messages = update(this.messages);
    this.chatChanged = true;
    this.queueRender();
  }

  appendMessage(message) {
    this.setMessages((prev) => (prev.some((m) => m.id === message.id) ? prev : [...prev, message]));
  }

  async openRoom(roomId) {
    if (this.currentRoomId === roomId) return;
    if (this.currentRoomId) this.socket.emit("room:leave", { room_id: this.currentRoomId });
    this.currentRoomId = roomId;
    this.opened.add(roomId);
    this.setMessages(() => []);
    this.setRooms((prev) => prev.map((r) => (r.room_id === roomId ? { ...r, unread_count: 0 } : r)));
    this.socket.emit("room:join", { room_id: roomId });
    try {
      const data = await getJson(`${this.restUrl}/messages?room_id=${encodeURIComponent(roomId)}`);
      if (this.currentRoomId !== roomId) return;
      const live = this.messages.filter((m) => !data.messages.some((h) => h.id === m.id));
      this.setMessages(() => [...data.messages, ...live]);
    } catch (error) {
      // the history stays what the live events brought; the next click asks again
    }
  }

  closeRoom() {
    if (!this.currentRoomId) return;
    this.socket.emit("room:leave", { room_id: this.currentRoomId });
    this.currentRoomId = null;
    this.setMessages(() => []);
  }

  // Rooms where some difference between the sidebar and REST has lasted, unchanged, SETTLE_MS.
  check(now) {
    const entries = new Map();
    for (const room of this.rooms) {
      const list = entries.get(room.room_id) || [];
      list.push(this.view(room));
      entries.set(room.room_id, list);
    }
    const ids = new Set(entries.keys());
    if (this.baseline !== null) {
      for (const [id, seq] of mirror.listed) if (seq > this.baseline) ids.add(id);
    }
    const differing = new Map();
    const mismatches = [];
    let checked = 0;
    for (const id of ids) {
      const rest = mirror.rooms.get(id);
      if (!rest) continue;
      checked += 1;
      const before = this.differing.get(id) || new Map();
      const found = new Map();
      const settled = [];
      for (const problem of compare(entries.get(id) || [], rest.view, this.opened.has(id))) {
        const earlier = before.get(problem.kind);
        const since = earlier && earlier.signature === problem.signature ? earlier.since : now;
        found.set(problem.kind, { signature: problem.signature, since });
        if (now - since >= SETTLE_MS) settled.push(problem.text);
      }
      if (found.size) differing.set(id, found);
      if (settled.length) mismatches.push({ room_id: id, problems: settled });
    }
    this.differing = differing;
    this.mismatches = mismatches;
    this.checked = checked;
    this.queueRender();
  }

  queueRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  render() {
    const bad = new Map(this.mismatches.map((m) => [m.room_id, m.problems]));
    const list = this.root.querySelector(".rooms");
    list.replaceChildren(...this.rooms.map((room) => roomItem(this.view(room), room.room_id, {
      open: room.room_id === this.currentRoomId,
      problems: bad.get(room.room_id),
    })));
    const counter = this.root.querySelector(".counter");
    counter.dataset.mismatches = String(this.mismatches.length);
    counter.dataset.rooms = String(this.rooms.length);
    counter.dataset.checked = String(this.checked);
    counter.classList.toggle("bad", this.mismatches.length > 0);
    counter.querySelector(".count").textContent = String(this.mismatches.length);
    const missing = this.mismatches.filter((m) => m.problems.includes("missing from the sidebar"));
    counter.querySelector(".note").textContent =
      `(${this.rooms.length} in the sidebar` + (missing.length ? `, ${missing.length} missing)` : ")");
    if (this.chatChanged) this.renderChat();
  }

  renderChat() {
    this.chatChanged = false;
    const chat = this.root.querySelector(".chat");
    const room = this.rooms.find((r) => r.room_id === this.currentRoomId);
    if (!this.currentRoomId) {
      chat.replaceChildren(el("p", { className: "placeholder" }, "Click a room to open its chat."));
      chat.removeAttribute("data-room-id");
      return;
    }
    chat.dataset.roomId = this.currentRoomId;
    chat.dataset.messages = String(this.messages.length);
    const head = el("div", { className: "chat-head" },
      el("b", {}, room ? this.view(room).name : this.currentRoomId),
      el("button", { className: "close", title: "close (room:leave)" }, "×"));
    const body = el("ol", { className: "messages" }, ...this.messages.map((m) =>
      el("li", { className: m.user_id ? "agent" : "customer", dataset: { messageId: m.id } },
        el("span", { className: "text" }, m.content_text ?? `[${m.content_type}]`),
        el("time", {}, clock(m.created_at)))));
    chat.replaceChildren(head, body);
    body.scrollTop = body.scrollHeight;
  }
}

// The differences between a room's sidebar entries and REST: each with a kind, a signature
// that changes when either side does, and words.
function compare(entries, rest, opened) {
  if (entries.length === 0) {
    return [{ kind: "missing", signature: "", text: "missing from the sidebar" }];
  }
  const problems = [];
  const problem = (kind, values, text) =>
    problems.push({ kind, signature: JSON.stringify(values), text });
  if (entries.length > 1) problem("entries", entries.length, `${entries.length} entries for one room`);
  const entry = entries[0];
  if (entry.name !== rest.name) {
    problem("name", [entry.name, rest.name], `name "${entry.name}", REST "${rest.name}"`);
  }
  if (entry.text !== rest.text || entry.at !== rest.at) {
    problem("last", [entry.text, entry.at, rest.text, rest.at],
      `last message "${entry.text ?? "none"}", REST "${rest.text ?? "none"}"`);
  }
  if (!opened && entry.unread !== rest.unread) {
    problem("unread", [entry.unread, rest.unread], `unread ${entry.unread}, REST ${rest.unread}`);
  }
  return problems;
}

// ---- DOM helpers ----------------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  const { dataset, ...rest } = props;
  Object.assign(node, rest);
  Object.assign(node.dataset, dataset || {});
  node.append(...children);
  return node;
}

function clock(iso) {
  if (!iso) return "";
  const moment = new Date(iso);
  return Number.isNaN(moment.getTime()) ? "" : moment.toLocaleTimeString([], { hour12: false });
}

function initials(name) {
  const words = name.replace(/[^\p{L}\s]/gu, " ").trim().split(/\s+/).filter(Boolean);
  return words.length ? words.slice(0, 2).map((w) => w[0].toUpperCase()).join("") : "#";
}

function roomItem(view, roomId, { open, problems }) {
  const placeholder = view.name === "Unknown" || view.name === "Personal";
  return el("li", {
    className: ["room", open && "open", problems && "mismatch", placeholder && "placeholder-name"]
      .filter(Boolean).join(" "),
    title: problems ? problems.join("\n") : "",
    dataset: { roomId, name: view.name, unread: String(view.unread ?? 0) },
  },
  el("span", { className: "avatar" }, initials(view.name)),
  el("span", { className: "who" },
    el("span", { className: "name" }, view.name),
    el("span", { className: view.text === null ? "preview empty" : "preview" },
      view.text ?? "no messages")),
  el("span", { className: "meta" },
    el("time", {}, clock(view.at)),
    view.unread ? el("span", { className: "unread" }, String(view.unread)) : ""));
}

// ---- enricher's numbers ----------------------------------------------------------------------

function milliseconds(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return seconds < 0.01 ? `${(seconds * 1000).toFixed(1)} ms` : `${Math.round(seconds * 1000)} ms`;
}

async function showStats() {
  const strip = document.getElementById("stats");
  try {
    const stats = await getJson("/api/stats");
    const values = {
      complete: stats.snapshots.complete,
      partial: stats.snapshots.partial,
      rooms_held: stats.rooms_held,
      p50: milliseconds(stats.hold_seconds.p50),
      p99: milliseconds(stats.hold_seconds.p99),
      duplicates_suppressed: stats.duplicates_suppressed,
    };
    for (const [key, value] of Object.entries(values)) {
      strip.querySelector(`[data-stat="${key}"]`).textContent = String(value);
    }
    strip.dataset.complete = String(stats.snapshots.complete);
    strip.dataset.partial = String(stats.snapshots.partial);
    strip.classList.remove("stale");
  } catch (error) {
    strip.classList.add("stale");
  }
}

// ---- start -----------------------------------------------------------------------------------

let mirror;
let rounds = 0;

async function start() {
  const config = await getJson("/config.json");
  document.getElementById("rate").textContent = String(config.rate);
  document.getElementById("chaos").textContent = config.chaos
    ? "chaos on: messages before rooms, duplicates, lost first messages, slow or failing REST"
    : "chaos off";
  mirror = new RestMirror(config.backend_url);
  const left = new Inbox(document.getElementById("left"), {
    url: config.backend_url, restUrl: config.backend_url,
    handlers: seedOriginalHandlers, style: "flat",
  });
  const right = new Inbox(document.getElementById("right"), {
    url: config.enricher_url, restUrl: config.backend_url,
    handlers: seedRecommendedHandlers, style: "nested",
  });
  const inboxes = { left, right };
  // The rooms to keep asking REST about: in a sidebar, or created since an inbox connected.
  const wanted = () => {
    const shown = new Set(Object.values(inboxes).flatMap((inbox) => inbox.rooms.map((r) => r.room_id)));
    const baselines = Object.values(inboxes).map((inbox) => inbox.baseline ?? Infinity);
    return (id, seq) => shown.has(id) || seq > Math.min(...baselines);
  };
  window.demoState = () => ({
    rounds,
    ...Object.fromEntries(Object.entries(inboxes).map(([side, inbox]) => [side, {
      connected: inbox.socket.connected && inbox.baseline !== null,
      rooms: inbox.rooms.length,
      checked: inbox.checked,
      mismatches: inbox.mismatches,
      names: inbox.rooms.map((room) => inbox.view(room).name),
    }])),
  });
  for (;;) {
    const started = performance.now();
    try {
      await mirror.refresh(wanted());
      const now = performance.now();
      left.check(now);
      right.check(now);
      rounds += 1;
    } catch (error) {
      // the backend is gone (the demo stopped): keep the last state on screen
    }
    showStats();
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, CHECK_MS - (performance.now() - started))));
  }
}

start();
