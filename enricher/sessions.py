"""Transparent mode: every browser gets its own backend connection, both ways.

::

    Browser ⇄ Session ⇄ Backend socket          (one pair per browser connection)
                 │
                 ├─ the join of this browser's stream (new_room held, then its snapshot)
                 └─ SharedRooms: GET /rooms/<id> once per room, for every session

A browser's engine.io connection is answered only once its own backend connection is open,
made with the browser's handshake (its query, Cookie, Authorization and other end-to-end
headers, X-Forwarded-For); a backend that cannot be reached fails the browser's connection
as it would have failed directly, and the browser's client retries by itself. Socket.IO
packets then pass as they came, both ways, on every namespace: CONNECT with its ``auth``
and the backend's answer or refusal, events, acks (their ids are the browser's and the
backend's own: one connection each way), binary attachments, DISCONNECT. The backend sees
each browser as it did directly, and each browser gets what the backend sent on its own
connection, nothing else. Only the backend's ``new_room``, ``new_message`` and
``room:new_message`` events of namespace ``/`` go through the join of that browser's
stream, which holds a new room until it is known and sends its ``new_room_complete``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog

from . import jsonwire, packets
from .backend import RestResult
from .backend_socket import BackendSocket, Message
from .client_packets import Refusal, Verdict
from .downstream import RESYNC
from .driver import JoinDriver
from .internals.websocket import text_frame
from .join_types import NEW_MESSAGE, NEW_ROOM, ROOM_MESSAGE, Emit, JoinLimits
from .recovery import SentLog

if TYPE_CHECKING:
    from .relay import Relay

log = structlog.get_logger("enricher.sessions")

JOINED_EVENTS = frozenset({NEW_ROOM, NEW_MESSAGE, ROOM_MESSAGE})
# The join of one browser's stream remembers less, and for less long, than a join of every
# browser's would: it exists once per browser.
SESSION_MAX_IDS = 10_000
SESSION_MESSAGE_ID_TTL = 60.0
SESSION_KNOWN_ROOM_TTL = 600.0
SESSION_EARLY = 32  # messages remembered per room without a snapshot (its new_room may be late)


def session_limits(limits: JoinLimits) -> JoinLimits:
    """The join bounds of one browser's stream."""
    return replace(
        limits,
        max_known_rooms=min(limits.max_known_rooms, SESSION_MAX_IDS),
        max_message_ids=min(limits.max_message_ids, SESSION_MAX_IDS),
        known_room_ttl=min(limits.known_room_ttl, SESSION_KNOWN_ROOM_TTL),
        message_id_ttl=min(limits.message_id_ttl, SESSION_MESSAGE_ID_TTL),
        max_pending_rooms=min(limits.max_pending_rooms, SESSION_MAX_IDS),
        max_early_messages_per_room=min(limits.max_early_messages_per_room, SESSION_EARLY),
    )


# enricher's session ids start so (a Node server's never do): a browser presenting one
# is not presenting the backend's
PID_PREFIX = "enricher."


def _sid_of(text: str, header: packets.Header) -> str | None:
    """The ``sid`` of a CONNECT answer."""
    answer = connect_auth(text, header)
    sid = answer.get("sid") if isinstance(answer, dict) else None
    return sid if isinstance(sid, str) else None


def connect_auth(text: str, header: packets.Header) -> Any:
    """A CONNECT packet's ``auth`` payload (None when it has none or it does not decode)."""
    body = text[header.body :]
    try:
        return jsonwire.loads(body) if body else None
    except (ValueError, RecursionError):
        return None


def _attachments(text: str) -> int:
    """How many binary attachments follow a packet (0 for a text one)."""
    if text[:1] not in ("5", "6"):
        return 0
    try:
        return packets.read_header(text).attachments
    except packets.BadPacket:
        return 0


def _stamped(message: Message, offset: str) -> Message:
    """An event packet of namespace ``/`` with its offset as a last argument, as a
    Socket.IO server with connection state recovery sends it; anything else as it is (an
    event that asks for an ack too: its last argument is where the browser's callback goes,
    and Socket.IO stamps none)."""
    if not isinstance(message, str) or not message.endswith("]"):
        return message
    kind = message[:1]
    if kind == "2":
        rest = message[1:2]
    elif kind == "5":
        rest = message[message.find("-") + 1 : message.find("-") + 2]
    else:
        return message
    if rest != "[":  # another namespace ("/..."), or an ack id
        return message
    return f'{message[:-1]},"{offset}"]'


def with_offset(message: Message, number: int, epoch: str) -> Message:
    """Message ``number`` of a session's log as its browser gets it: an event of ``/``
    with its offset (a binary event's is its last attachment's number)."""
    if not isinstance(message, str):
        return message
    return _stamped(message, f"{epoch}.{number + _attachments(message)}")


def replay(missed: list[Message], first: int, away_from: int, epoch: str) -> list[Message]:
    """What a returning browser is given of what came after its offset (``first`` is the
    number of ``missed[0]``): everything kept while it was away (from ``away_from`` on);
    of what was written to it before, only the events with an offset and their
    attachments, as a Socket.IO server replays: an ack or an ack request it got already
    must not come twice."""
    replayed: list[Message] = []
    attachments = 0
    for number, message in enumerate(missed, first):
        if number >= away_from:
            replayed.append(with_offset(message, number, epoch))
        elif isinstance(message, bytes):
            if attachments:
                attachments -= 1
                replayed.append(message)
        elif (stamped := with_offset(message, number, epoch)) is not message:
            replayed.append(stamped)
            attachments = _attachments(message)
    return replayed


class Session:
    """One browser connection and its own backend connection, with the join of its stream.
    Opened at the browser's engine.io handshake, closed with either side."""

    def __init__(
        self, relay: Relay, eio_sid: str, backend: Callable[[Session], BackendSocket]
    ) -> None:
        self.relay = relay
        self.eio_sid = eio_sid
        self.backend = backend(self)
        self.driver: JoinDriver | None = None  # made at the first event the join takes
        self.reader: asyncio.Task[None] | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self.closing = False
        # Connection state recovery by enricher (the backend has none of its own): the pid
        # given to the browser, what was sent to it lately, its "/" CONNECT answer.
        self.pid: str | None = None
        self.sent: SentLog | None = None
        self.connected_answer = ""
        self.namespaces: set[str] = set()  # connected, by the backend's answers
        self.sockets: dict[str, str] = {}  # the Socket.IO id on each, by namespace
        self.seen: dict[str, Any] | None = None  # its handshake, for the Admin UI's view
        self.away: asyncio.TimerHandle | None = None  # while its browser is away
        self.away_from = 0  # the number of the first message kept while it was away
        self.holder: str | None = None  # whose credentials it was admitted with
        self.sid: str = eio_sid  # for log lines: its Socket.IO id on "/" once it has one
        self.handshake: dict[str, str] = {}  # its credentials' part of the handshake
        self.resync = False  # a browser that could not recover: told once connected
        self._args: tuple[Any, ...] | None = None  # of the event the join is given now
        self._text = ""
        self._answered: dict[str, float] = {}  # when REST last answered, by room

    # -- backend to browser --------------------------------------------------------------

    def from_backend(self, message: Message) -> None:
        """One engine.io message from the backend, in order."""
        if isinstance(message, str) and message[:1] in ("0", "1"):
            message = self._connection_packet(message)
        elif isinstance(message, str) and message[:1] == "2":
            try:
                header = packets.read_header(message)
            except packets.BadPacket:
                header = None
            if header is not None and header.namespace == "/" and header.ack_id is None:
                name = packets.event_name(message, header)
                if name in JOINED_EVENTS:
                    self._join_event(name, message, header)
                    return
        self.to_browser(message)

    def _connection_packet(self, text: str) -> str:
        """The backend's CONNECT answer or DISCONNECT of a namespace: which namespaces are
        connected; on ``/``, without a ``pid`` of the backend's own, enricher's, so that the
        browser may recover its session after a blip."""
        try:
            header = packets.read_header(text)
        except packets.BadPacket:
            return text
        if header.type == packets.DISCONNECT:
            self.namespaces.discard(header.namespace)
            self._socket_gone(header.namespace, "server namespace disconnect")
            if header.namespace == "/" and self.away is not None:
                self.relay.forget(self, "server_disconnect")  # nothing to come back to
            return text
        self.namespaces.add(header.namespace)
        if header.type == packets.CONNECT and (sid := _sid_of(text, header)) is not None:
            self.sockets[header.namespace] = sid
            if (
                self.away is None
                and not self.closing
                and self.relay.sessions.get(self.eio_sid) is self
            ):
                # (one answered while its browser is away is shown when it comes back)
                self.relay.view.connected(header.namespace, sid, self.eio_sid, self.seen)
            if header.namespace == "/":
                self.sid = sid
        window = self.relay.settings.max_disconnection
        if header.namespace != "/" or window is None:
            return text
        try:
            answer = jsonwire.loads(text[header.body :])
        except (ValueError, RecursionError):
            return text
        if not isinstance(answer, dict) or "pid" in answer:
            return text  # the backend recovers sessions itself: its pid and offsets pass
        if self.pid is None:
            settings = self.relay.settings
            self.pid = PID_PREFIX + secrets.token_urlsafe(12)
            # a lost connection is noticed within a heartbeat or two (polling: its next poll)
            self.sent = SentLog(2 * settings.heartbeat, settings.max_missed)
        self.connected_answer = "0" + jsonwire.dumps({**answer, "pid": self.pid})
        if self.resync:
            self.resync = False
            self.relay.metrics.resyncs.labels("recovery_failed").inc()
            self.to_browser(self.connected_answer)
            return packets.event(RESYNC, ({"reason": "recovery_failed"},))
        return self.connected_answer

    def _join_event(self, name: str, text: str, header: packets.Header) -> None:
        try:
            args = self.relay.reading.arguments(text, header)
        except (ValueError, RecursionError):  # the browser gets it as it came
            self.relay.metrics.payload_rejected(name, "undecodable")
            log.warning("payload_rejected", upstream_event=name, reason="undecodable")
            self.to_browser(text)
            return
        if self.driver is None:
            self.driver = self.relay.join_driver(self)
        self._args, self._text = args, text
        try:
            self.driver.upstream_event(name, args)
        finally:
            self._args = None

    def emit(self, action: Emit) -> None:
        """Carry out an emit of this browser's join: the backend's packet as it came when
        it is the event given, else the event encoded."""
        if action.args is self._args and self._args is not None:
            self.to_browser(self._text)
        else:
            self.to_browser(self.relay.reading.event(action.event, action.args))
        self.relay.metrics.emitted(action.event)

    def to_browser(self, message: Message) -> None:
        """Send (or, while the browser is away, keep) one message; with enricher's recovery,
        an event of ``/`` carries its offset as its last argument."""
        sent = self.sent
        if sent is None:
            if self.away is None:
                self._write(message)
            return
        if isinstance(message, str):
            message = self.relay.reading.same(message)  # kept once, however many browsers
        number = sent.add(message, asyncio.get_running_loop().time(), away=self.away is not None)
        if self.away is not None:
            if sent.overflowed:
                self.relay.forget(self, "too_many_missed")
            return
        self._write(with_offset(message, number, self.relay.epoch))

    def _write(self, message: Message) -> None:
        """Write one message to the browser: straight to its WebSocket when nothing waits
        in front of it there (no task, no queue), else through python-engineio's queue."""
        relay, eio_sid = self.relay, self.eio_sid
        socket = relay.eio.sockets.get(eio_sid)
        if socket is None or socket.closed or socket.closing or self.closing:
            return
        websocket = relay.websockets.get(eio_sid)
        if isinstance(message, str) and websocket is not None and websocket.writable():
            websocket.write_frame(text_frame(b"4" + message.encode()))
            return
        if socket.queue.qsize() >= relay.settings.max_queued_events:
            relay.drop(self, "backlog")
            return
        socket.queue.message(message)

    async def fetch_room(self, room_id: str, wanted: Callable[[], bool]) -> RestResult:
        """The join's ``GET /rooms/<id>``, shared with every other session."""
        at, answer = await self.relay.rooms.fetch(room_id, self._answered.pop(room_id, None))
        pending = self.driver.pending_rooms if self.driver is not None else {}
        if room_id in pending:  # it may ask again: then for a newer answer than this one
            self._answered[room_id] = at
            if len(self._answered) > 2 * len(pending) + 16:
                self._answered = {r: t for r, t in self._answered.items() if r in pending}
        return answer

    async def run(self) -> None:
        """Relay the backend's messages until its connection ends; then the browser's
        ends too (it reconnects by itself, unless the backend told it not to)."""
        try:
            await self.backend.run()
        finally:
            if not self.closing:
                log.info("backend_socket_closed", sid=self.sid, by=self.backend.closed_by)
                await self.relay.close_browser(self)

    # -- browser to backend --------------------------------------------------------------

    async def from_browser(self, message: Message) -> None:
        """One engine.io message from the browser, in order."""
        relay = self.relay
        if self.closing:
            return
        checks = relay.client_packets
        verdict = checks.check(self.eio_sid, message)
        if isinstance(verdict, Refusal):
            await relay.refuse_packet(self, verdict)
            return
        if verdict is Verdict.DROP:
            return
        if isinstance(message, bytes):
            await self.backend.send(message)
            return
        header = packets.read_header(message)  # it is a packet: checked
        if header.type == packets.CONNECT:
            if not await self.relay.admit(self, message, header):
                return
            if self.closing or self.relay.sessions.get(self.eio_sid) is not self:
                return  # it left while its credentials were checked
            if header.namespace == "/":
                auth = connect_auth(message, header)
                pid = auth.get("pid") if isinstance(auth, dict) else None
                if isinstance(pid, str) and pid.startswith(PID_PREFIX):
                    if self.relay.resume(self, pid, auth.get("offset")):
                        return
                    # not recovered: a new session, which the backend never knew of
                    self.resync = True
                    rest = {k: v for k, v in auth.items() if k not in ("pid", "offset")}
                    message = "0" + jsonwire.dumps(rest) if rest else "0"
        elif header.type == packets.DISCONNECT:
            self.namespaces.discard(header.namespace)
            self._socket_gone(header.namespace, "client namespace disconnect")
        elif header.type in (packets.EVENT, packets.BINARY_EVENT):
            refusal = self.relay.refusal(self, message, header)
            if refusal is not None:
                checks.refused(self.eio_sid)  # its attachments are not sent on either
                if header.ack_id is not None:
                    self.to_browser(packets.ack(header.ack_id, (refusal,), header.namespace))
                return
        await self.backend.send(message)

    def _socket_gone(self, namespace: str, reason: str) -> None:
        sid = self.sockets.pop(namespace, None)
        if sid is not None:
            self.relay.view.disconnected(namespace, sid, reason)

    async def close(self) -> None:
        """The browser left (or is made to): so does its backend connection."""
        self.closing = True
        for namespace in list(self.sockets):
            self._socket_gone(namespace, "forced close")
        for timer in (self.expiry, self.away):
            if timer is not None:
                timer.cancel()
        if self.pid is not None and self.relay.kept.get(self.pid) is self:
            del self.relay.kept[self.pid]  # nobody can come back to it now
        if self.driver is not None:
            self.driver.stop()
        await self.backend.close()
        if self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader

    @property
    def rooms_held(self) -> int:
        return 0 if self.driver is None else len(self.driver.pending_rooms)
