"""The browsers' side: a Socket.IO server on aiohttp that looks like the backend.

Browsers connect exactly as they connected to the backend. Their ``room:join`` puts them
in the local room ``room:<id>`` (the proxy joins the backend's room once, for all of
them); every other browser event goes to the backend on the proxy's connection, with
its ack relayed back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import ipaddress
import re
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import aiohttp
import socketio
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from redis.exceptions import RedisError
from socketio import packet

from . import jsonwire
from .access import Admission, Credentials, Gate, OpenGate, Refused, RoomAccess, renewal
from .client_packets import ClientPackets, Refusal, Verdict
from .clients import ConnectionLimit
from .fanout import (
    BroadcastManager,
    close_engine_socket,
    node_engine,
    websocket_class,
    websocket_upgrade,
)
from .join import Emit
from .jsonwire import event_packet
from .metrics import Metrics, event_label
from .payloads import Rejected, room_id_of
from .recovery import NotRecovered, Recovered, Recovery, Session
from .refusals import RateLimit, Refusals
from .server import Handler, shielded
from .shared import SharedLog
from .upstream import UpstreamUnavailable, as_socketio_data

log = structlog.get_logger("enricher.downstream")

RESYNC = "enricher:resync"  # events may have been missed, refetch (to every browser, or one)
ROOM_JOIN = "room:join"
ROOM_LEAVE = "room:leave"
# Event names Socket.IO keeps for itself (socket.io-client refuses to emit them), and "*",
# python-socketio's name for its catch-all handler: it would call it with the wrong arguments.
RESERVED_EVENTS = frozenset(
    {
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "newListener",
        "removeListener",
        "*",
    }
)

# What socket.io-client adds to the CONNECT auth of a socket that may recover its session.
RECOVERY_KEYS = frozenset({"pid", "offset"})

# CONNECT packets one engine.io connection may send before it is refused unchecked.
MAX_CONNECT_ATTEMPTS = 3
# After the last session kept at shutdown was given back elsewhere, how long the replica that
# gave it back is given to join its backend rooms before this one leaves them.
HANDOVER_MARGIN = 0.5

# Whether the browser event being handled asked for an ack: python-socketio does not tell
# handlers, and an ack must not be asked of the backend on behalf of a browser that did not.
_ack_requested: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ack_requested", default=False
)
# The credentials and admission of the browser being connected, for its connect handler.
_admitted: contextvars.ContextVar[tuple[Credentials, Admission]] = contextvars.ContextVar(
    "admitted"
)


class BackendPort(Protocol):
    """What the browsers' side needs of the backend connection."""

    @property
    def connected(self) -> bool: ...

    async def emit(self, event: str, args: tuple[Any, ...]) -> None: ...

    async def call(self, event: str, args: tuple[Any, ...], timeout: float) -> Any: ...


class _Server(socketio.AsyncServer):  # type: ignore[misc]
    on_undecodable: Callable[[str, str], Awaitable[None]]
    on_invalid: Callable[[str], object]
    # Each browser message, before python-socketio reads it: False when it is refused.
    screen: Callable[[str, str | bytes], Awaitable[bool]]
    client_packets: ClientPackets
    refusals: Refusals
    clients: ConnectionLimit
    on_refused: Callable[[str, Any, str], dict[str, Any]]
    rate_allows: Callable[[str], bool]
    admit: Callable[[str, Any, int], Awaitable[tuple[Credentials, Admission]]]
    _connect_attempts: dict[str, int]
    # Connection state recovery (None: off). ``pids``: each connected browser's pid and
    # the last event number before its session started; ``persisted``: browsers whose
    # session is kept while their disconnection is handled; ``on_recovery(sid, outcome,
    # given_up)``: told of each browser that presented a pid.
    recovery: Recovery | None = None
    pids: dict[str, tuple[str, int, str | None]]
    persisted: set[str]
    on_recovery: Callable[[str, str, Session | None], Awaitable[None]]
    release: Callable[[Session], Awaitable[None]]  # a kept session nobody gets back
    rejoin: Callable[[str, Session], Awaitable[None]]  # a session given back: its rooms
    # With the replicas' shared sequence (None: sessions kept in this process), and the
    # sessions this replica kept there (pid: sid), whose rooms it holds until they go.
    shared: SharedLog | None = None
    left: dict[str, str]

    async def _handle_connect(self, eio_sid, namespace, data):  # type: ignore[no-untyped-def]
        namespace = namespace or "/"
        if namespace != "/" or self.manager.sid_from_eio_sid(eio_sid, namespace) is not None:
            # python-socketio refuses it (one namespace, one connection each): no check
            return await super()._handle_connect(eio_sid, namespace, data)
        attempts = self._connect_attempts[eio_sid] = self._connect_attempts.get(eio_sid, 0) + 1
        # Checked before python-socketio registers the socket: once registered, even while
        # its connect handler runs, it is part of every broadcast.
        try:
            admitted = await self.admit(eio_sid, data, attempts)
        except Refused as exc:
            refusal = {"message": "unauthorized", "data": {"reason": exc.reason}}
            await self._send_packet(
                eio_sid, self.packet_class(packet.CONNECT_ERROR, data=refusal, namespace="/")
            )
            return None
        engine_socket = self.eio.sockets.get(eio_sid)
        if engine_socket is None or engine_socket.closed or eio_sid not in self.environ:
            return None  # it left while its credentials were checked
        _admitted.set(admitted)
        if self.recovery is None:
            return await super()._handle_connect(eio_sid, namespace, data)
        return await self._connect_recovering(eio_sid, data, self.recovery, engine_socket)

    async def _connect_recovering(
        self, eio_sid: str, auth: Any, recovery: Recovery, engine_socket: Any
    ) -> None:
        """python-socketio's connect, with Socket.IO connection state recovery: a browser
        that presents the ``pid`` of a session kept for it gets it back (its sid, its
        rooms, then every event it missed, before the CONNECT answer, as socket.io does);
        any other gets a new session with a new ``pid``."""
        outcome: str | None = None
        given_up: Session | None = None  # a kept session the browser does not get back
        replay: Recovered | None = None
        holder = _admitted.get()[1].holder
        if isinstance(auth, dict) and "pid" in auth:
            pid, offset = auth.get("pid"), auth.get("offset")
            if self.shared is None:
                kept = recovery.sessions.get(pid) if isinstance(pid, str) else None
                given_up = kept if kept is not None and kept.holder == holder else None
                decision = recovery.restore(pid, offset, holder)
            else:
                decision = await self._restore_shared(pid, offset, holder, recovery)
                if isinstance(decision, Recovered):
                    given_up = decision.session
                if engine_socket.closed:  # it left meanwhile
                    if given_up is not None:
                        await self.release(given_up)
                    return None
            if not isinstance(decision, Recovered):
                outcome = decision.reason
            elif self.manager.eio_sid_from_sid(decision.session.sid, "/") is not None:
                outcome = "session_in_use"  # its old connection is still being closed
            elif len(decision.missed) > self.manager.max_replay:
                outcome = "too_many_missed"  # more than its queue may hold: refetch
            else:
                outcome, given_up, replay = "recovered", None, decision
                self.manager.reuse_sid(eio_sid, decision.session.sid)
        # From here to the replay queued, nothing yields to the loop: no broadcast can
        # reach this browser between its registration and its missed events.
        sid = await self.manager.pre_connect(eio_sid, "/")
        if sid is None:
            await self._send_packet(
                eio_sid,
                self.packet_class(packet.CONNECT_ERROR, data="Unable to connect", namespace="/"),
            )
            for session in (given_up, replay.session if replay is not None else None):
                if session is not None:
                    await self.release(session)
            return
        if replay is not None:
            session = replay.session
            self.pids[sid] = (session.pid, session.since, holder)
            for room in session.rooms:
                if room != sid:
                    self.manager.basic_enter_room(sid, "/", room, eio_sid=eio_sid)
            for text, attachments in replay.packets():
                self.manager.queue_now(engine_socket, eio_sid, text, attachments)
        else:
            self.pids[sid] = (recovery.new_pid(), recovery.last, holder)
        try:
            success = await self._trigger_event("connect", "/", sid, self.environ[eio_sid], auth)
            fail_reason = socketio.exceptions.ConnectionRefusedError().error_args
        except socketio.exceptions.ConnectionRefusedError as exc:
            fail_reason, success = exc.error_args, False
        if success is False:
            await self._send_packet(
                eio_sid, self.packet_class(packet.CONNECT_ERROR, data=fail_reason, namespace="/")
            )
            await self.manager.disconnect(sid, "/", ignore_queue=True)
            self.pids.pop(sid, None)
            if replay is not None:
                await self.on_recovery(sid, "refused", replay.session)
            if given_up is not None:
                await self.release(given_up)
            return
        answer = {"sid": sid, "pid": self.pids[sid][0]}
        await self._send_packet(eio_sid, self.packet_class(packet.CONNECT, answer, namespace="/"))
        await self.manager.connect(sid, "/")
        if replay is not None:
            await self.rejoin(sid, replay.session)
        if outcome is not None:
            await self.on_recovery(sid, outcome, given_up)

    async def _restore_shared(
        self, pid: object, offset: object, holder: str | None, recovery: Recovery
    ) -> Recovered | NotRecovered:
        """:meth:`Recovery.restore` with the session, and events older than this replica's
        own buffer, from the shared store."""
        assert self.shared is not None
        if not isinstance(pid, str) or not self.shared.up:
            return NotRecovered("unknown_session" if self.shared.up else "store_unavailable")
        try:
            session = await self.shared.take(pid, holder, recovery.now())
            if session is None:
                return NotRecovered("unknown_session")
            older = recovery.older(session, offset)
            entries = [] if older is None else await self.shared.fetch(*older)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("recovery_store_failed", error=repr(exc))
            return NotRecovered("store_unavailable")
        older_events = [
            recovery.stored(entry.number, entry.packet, entry.rooms, entry.skip, entry.attachments)
            for entry in entries
        ]
        return recovery.restore_session(session, offset, older_events)

    async def _keep(self, sid: str, pid: str, rooms: Any, since: int, holder: str | None) -> bool:
        """Keep a lost browser's session, for this replica or any; False if it cannot be."""
        assert self.recovery is not None
        if self.shared is None:
            self.recovery.leave(sid, pid, rooms, since, holder)
            return True
        if not self.shared.up:
            return False
        try:
            await self.shared.keep(Session(sid, pid, frozenset(rooms), since, 0.0, holder))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("recovery_store_failed", error=repr(exc))
            return False
        self.left[pid] = sid
        return True

    async def _handle_eio_connect(self, eio_sid, environ):  # type: ignore[no-untyped-def]
        self.clients.connected(eio_sid, environ)
        return await super()._handle_eio_connect(eio_sid, environ)

    async def _handle_eio_disconnect(self, eio_sid, reason):  # type: ignore[no-untyped-def]
        self.clients.disconnected(eio_sid)
        self._connect_attempts.pop(eio_sid, None)
        self.client_packets.forget(eio_sid)
        self.refusals.forget(eio_sid)
        self._binary_packet.pop(eio_sid, None)  # attachments python-socketio was given
        # A connection lost (not a namespace DISCONNECT, nor enricher's own close): its
        # session is kept, with its rooms, before python-socketio forgets them.
        sid = self.manager.sid_from_eio_sid(eio_sid, "/")
        recovery = self.recovery
        if (
            recovery is not None
            and sid is not None
            and sid in self.pids
            and self.manager.is_connected(sid, "/")
            and sid not in self.manager.unrecoverable
        ):
            pid, since, holder = self.pids[sid]
            if await self._keep(sid, pid, self.manager.get_rooms(sid, "/"), since, holder):
                self.persisted.add(sid)
        try:
            return await super()._handle_eio_disconnect(eio_sid, reason)
        finally:
            if sid is not None:
                self.persisted.discard(sid)
                self.manager.unrecoverable.discard(sid)

    async def _handle_eio_message(self, eio_sid, data):  # type: ignore[no-untyped-def]
        if not await self.screen(eio_sid, data):
            return None
        try:
            return await super()._handle_eio_message(eio_sid, data)
        except RecursionError:  # arguments nested deeper than a JSON decoder goes
            await self.on_undecodable(eio_sid, data)
            return None
        except ValueError:  # JSON python-socketio cannot decode, a packet it refuses
            self.on_invalid(eio_sid)
            return None

    async def _handle_event_internal(  # type: ignore[no-untyped-def]
        self, server, sid, eio_sid, data, namespace, id
    ):
        refusal = None
        if data and not self.rate_allows(sid):
            refusal = "rate_limited"
        elif data and data[0] in RESERVED_EVENTS:
            # Sent by a client, these would run the server's own connect or disconnect
            # handler: a browser could fake its own disconnection.
            refusal = "event_reserved"
        if refusal is not None:
            await self.ack(eio_sid, id, self.on_refused(sid, data[0], refusal), namespace)
            return None
        _ack_requested.set(id is not None)
        return await super()._handle_event_internal(server, sid, eio_sid, data, namespace, id)

    async def ack(
        self, eio_sid: str, id: int | None, answer: dict[str, Any], namespace: str = "/"
    ) -> None:
        """Answer a browser event's ack, if it asked for one, without its handler."""
        if id is not None:
            ack = self.packet_class(packet.ACK, namespace=namespace, id=id, data=[answer])
            await self._send_packet(eio_sid, ack)


OWN_ORIGIN = "enricher.own_origin"  # in a request's environ: see engine_translation
_REFUSED = "enricher.origin_refused"


def origins_check(
    listed: list[str] | str, metrics: Metrics
) -> Callable[[str | None, dict[str, Any]], bool]:
    """The page origins allowed to connect: those ``listed``, and enricher's own where it
    is known for sure (``OWN_ORIGIN``). A request without an Origin is no page's. A page
    refused gets python-engineio's 400 "<origin> is not an accepted origin."; each is
    logged and counted here."""
    allowed = frozenset([listed] if isinstance(listed, str) else listed)

    def check(origin: str | None, environ: dict[str, Any]) -> bool:
        if origin is None or origin in allowed or origin == environ.get(OWN_ORIGIN):
            return True
        if _REFUSED in environ:
            return False  # asked again for the same request: to write its CORS headers
        environ[_REFUSED] = True
        log.warning(
            "browser_refused",
            reason="origin",
            origin=origin[:200],
            host=environ.get("HTTP_HOST", "")[:200],
            remote=environ.get("REMOTE_ADDR"),
        )
        metrics.browser_admissions.labels("origin").inc()
        return False

    return check


def engine_translation(
    trusts: Callable[[str | None], bool],
) -> Callable[[web.Request], dict[str, Any]]:
    """python-engineio's request translation, mended: a polling body is read whole
    (WholeBody); the peer is the real one (it says 127.0.0.1 for every one); the scheme is
    the connection's, or a trusted proxy's ``X-Forwarded-Proto`` (it believed anyone's);
    and ``OWN_ORIGIN`` is the origin the browser addressed, where a page there is enricher's
    own: as a trusted proxy in front says (it routes by host), or as the Host header says
    when that is an address or ``localhost``. A Host that is a name is not believed: under
    DNS rebinding, a page of any site could have its name point at enricher.

    The environ is kept for the connection's life: it has what python-engineio and
    python-socketio read, and every header as ``HTTP_<NAME>`` (a browser's connect
    handlers see them), not python-engineio's dozen WSGI constants."""

    def translate_request(request: web.Request) -> dict[str, Any]:
        headers = request.headers
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "PATH_INFO": request.path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": request.query_string,
            "REMOTE_ADDR": request.remote or "",
            "wsgi.input": WholeBody(request),
            "aiohttp.request": request,
        }
        for name, value in headers.items():  # as python-engineio names them
            name = name.upper()
            if name in _CONTENT_HEADERS:
                environ[_CONTENT_HEADERS[name]] = value
                continue
            key = "HTTP_" + name.replace("-", "_")
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        scheme, host = request.scheme, headers.get("Host", "")
        vouched = trusts(request.remote)
        if vouched:
            scheme = _first(headers.get("X-Forwarded-Proto")) or scheme
            host = _first(headers.get("X-Forwarded-Host")) or host
        environ["wsgi.url_scheme"] = scheme
        if host and (vouched or _no_name(host)):
            environ[OWN_ORIGIN] = f"{scheme}://{host}"
        return environ

    return translate_request


_CONTENT_HEADERS = {"CONTENT-TYPE": "CONTENT_TYPE", "CONTENT-LENGTH": "CONTENT_LENGTH"}


def _first(value: str | None) -> str:
    """The first of a forwarding header's comma-separated values (the client's side)."""
    return (value or "").split(",")[0].strip()


def _no_name(host: str) -> bool:
    """Whether a Host header (with or without its port) is an IP address or localhost:
    nothing another site's page could be served from."""
    try:
        name = urllib.parse.urlsplit("//" + host).hostname or ""
    except ValueError:  # "[::1" and the like
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name == "localhost" or name.endswith(".localhost")
    return True


class WholeBody:
    """A polling request's body as python-engineio reads it: ``read(n)`` gives all of it.
    aiohttp's stream gives what has arrived so far, and python-engineio took that for the
    whole body: the rest of a large event was lost, silently. (engine_requests has read it
    already, to check it; aiohttp keeps it.)"""

    def __init__(self, request: web.Request) -> None:
        self._request = request

    async def read(self, n: int = -1) -> bytes:
        try:
            return await self._request.read()
        except (ConnectionError, aiohttp.ClientPayloadError, web.HTTPException):  # it left
            return b""


class PayloadLimit:
    """Browser messages over ``max_payload_bytes``: python-engineio closes the connection
    (socket.io-client reconnects) and says nothing; this logs and counts each."""

    def __init__(
        self,
        limit: int,
        metrics: Metrics,
        refusals: Refusals,
        sid_of: Callable[[str], str],
        connected: Callable[[str], bool],
    ) -> None:
        self._limit = limit
        self._metrics = metrics
        self._refusals = refusals
        self._sid_of = sid_of
        self._connected = connected

    def _too_large(self, eio_sid: str, size: int | None, transport: str) -> None:
        log.warning(
            "payload_rejected",
            source="browser",
            reason="too_large",
            size=size,
            limit=self._limit,
            transport=transport,
            sid=self._sid_of(eio_sid),
        )
        self._metrics.client_events.labels("other", "too_large").inc()

    def not_engineio(self, eio_sid: str) -> None:
        """A WebSocket text frame that is no engine.io packet: its connection was closed."""
        self._refusals.refuse(eio_sid, "other", "not_engineio", self._sid_of(eio_sid), True)

    def websocket(self, eio_sid: str, detail: str) -> None:
        size = re.search(r"size (\d+)", detail)  # aiohttp: "Message size N exceeds limit M"
        self._too_large(eio_sid, int(size.group(1)) if size else None, "websocket")

    def polling(self, request: web.Request) -> None:
        """Log and count a polling POST over the limit (python-engineio refuses it)."""
        size = request.content_length
        sid = request.query.get("sid", "")
        if (
            request.method == "POST"
            and size is not None
            and size > self._limit
            and self._connected(sid)  # a browser's, not any request's: no log flood
        ):
            self._too_large(sid, size, "polling")


# The first character of each packet of a polling body: an engine.io packet type, or "b"
# for a binary one in base64.
_POLLING_PACKET = re.compile(r"[0-6b]")


def polling_payload_ok(body: bytes) -> bool:
    """Whether a polling POST body is an engine.io payload: UTF-8, packets separated by
    \\x1e, each one starting with its type."""
    try:
        packets = body.decode("utf-8").split("\x1e")
        for packet in packets:
            if packet[:1] == "b":
                base64.b64decode(packet[1:], validate=True)
    except ValueError:  # not UTF-8, not base64
        return False
    return all(_POLLING_PACKET.match(packet) for packet in packets)


# A request's handler with the next one to call: what engine_requests is.
EngineHandler = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def engine_requests(max_bytes: int, metrics: Metrics) -> EngineHandler:
    """Engine.io requests a Node server answers 400 "Bad request", answered so here too,
    logged in one line and counted: a polling body that is no engine.io payload (python-
    engineio would log a traceback and answer 200), and the errors of a client's making
    python-engineio lets out of its handler (a poll for a session closing meanwhile:
    KeyError; a packet it cannot decode: ValueError), which aiohttp answers 500."""

    def bad_request(request: web.Request, error: str) -> web.Response:
        log.info("http_bad_request", reason="engineio", error=error[:200])
        metrics.http_answered(request.method, 400, None)
        return web.json_response({"code": 3, "message": "Bad request"}, status=400)

    async def engine_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        size = request.content_length
        if request.method == "POST" and size is not None and 0 < size <= max_bytes:
            try:
                body = await request.read()  # kept: python-engineio reads it again (WholeBody)
            except (ConnectionError, aiohttp.ClientPayloadError, web.HTTPException):
                return bad_request(request, "the body was cut short")
            if not polling_payload_ok(body):
                return bad_request(request, "not an engine.io payload")
        try:
            return await handler(request)
        except (KeyError, ValueError) as exc:
            return bad_request(request, f"{type(exc).__name__}: {exc}")

    return engine_requests


def _websocket_upgrade(request: web.Request) -> bool:
    """Whether a request is a WebSocket handshake (a GET asking to upgrade), not merely one
    with an Upgrade header: only those skip the shield and the polling checks."""
    headers = request.headers
    return request.method == "GET" and websocket_upgrade(
        headers.get("Connection"), headers.get("Upgrade")
    )


def engine_gate(
    socketio_path: str,
    clients: ConnectionLimit,
    limit: PayloadLimit,
    max_bytes: int,
    metrics: Metrics,
    *,
    shield_websockets: bool = False,
) -> Middleware:
    """What a request to the Socket.IO path passes before python-engineio, in both modes:
    the connection limit, the polling payload limit's log line, the bad requests a Node
    server answers 400; and not cancelled when its client leaves (python-engineio ends it
    itself, and the connection limit sees that end).

    A WebSocket keeps none of this for its connection's life: no frame (this is a plain
    function handing on python-engineio's coroutine), and no shield task unless
    ``shield_websockets``: its handler ends by itself when the browser leaves
    (:class:`EngineSocket`), and nothing before it waits on anything but the browser.
    Transparent mode's handshake waits for the browser's own backend connection, which a
    cancellation would leave half open: its WebSockets are shielded."""
    prefix = "/" + socketio_path.strip("/") + "/"
    requests = engine_requests(max_bytes, metrics)

    @web.middleware
    def engine_gate(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        if not request.path.startswith(prefix):
            return handler(request)
        if not shield_websockets and _websocket_upgrade(request):
            return clients.admit(request, handler)
        limit.polling(request)
        return shielded(clients.admit(request, lambda request: requests(request, handler)))

    return engine_gate


class RoomMembership:
    """Which browsers are in which backend room, so the proxy joins each room once."""

    def __init__(self) -> None:
        self._members: dict[str, set[str]] = defaultdict(set)
        self._rooms_of: dict[str, set[str]] = defaultdict(set)

    def join(self, sid: str, room_id: str) -> bool:
        """Add a browser; True when it is the room's first."""
        members = self._members[room_id]
        first = not members
        members.add(sid)
        self._rooms_of[sid].add(room_id)
        return first

    def leave(self, sid: str, room_id: str) -> bool:
        """Remove a browser; True when the room has no browser left."""
        members = self._members.get(room_id)
        if not members or sid not in members:
            return False
        members.discard(sid)
        self._rooms_of[sid].discard(room_id)
        if not self._rooms_of[sid]:
            del self._rooms_of[sid]
        if members:
            return False
        del self._members[room_id]
        return True

    def drop(self, sid: str) -> list[str]:
        """Remove a browser from every room; the rooms left empty."""
        return [
            room_id for room_id in list(self._rooms_of.get(sid, ())) if self.leave(sid, room_id)
        ]

    def rooms(self) -> list[str]:
        return list(self._members)

    def rooms_of(self, sid: str) -> set[str]:
        return set(self._rooms_of.get(sid, ()))

    def __len__(self) -> int:
        """Entries kept: one per room with browsers, one per browser in a room."""
        return len(self._members) + len(self._rooms_of)


class Downstream:
    """The Socket.IO server browsers connect to, mounted on an aiohttp app."""

    def __init__(
        self,
        backend: BackendPort,
        metrics: Metrics,
        *,
        cors_origins: list[str] | str,
        trusts: Callable[[str | None], bool] = lambda peer: False,
        max_connections_per_client: int = 0,
        client_events: list[str] | str,
        ack_timeout: float,
        socketio_path: str = "socket.io",
        compression: bool = False,
        direct_broadcast: bool = True,
        max_queued_events: int = 1000,
        client_event_rate: float = 0.0,
        client_event_burst: int = 1,
        gate: Gate | None = None,
        room_access: RoomAccess | None = None,
        auth_timeout: float = 2.0,
        max_payload_bytes: int = 1_000_000,
        ping_interval: float = 25.0,
        ping_timeout: float = 20.0,
        recovery: Recovery | None = None,
        shared: SharedLog | None = None,
    ) -> None:
        self._backend = backend
        self._metrics = metrics
        self._allowed = None if client_events == "*" else frozenset(client_events)
        self._ack_timeout = ack_timeout
        self.rate_limit = RateLimit(
            client_event_rate, client_event_burst, asyncio.get_running_loop().time
        )
        self.accepting = True
        self.membership = RoomMembership()
        self._gate = gate or OpenGate()
        self._room_access = room_access
        self._auth_timeout = auth_timeout
        self._credentials: dict[str, Credentials] = {}
        self._expiries: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self.refusals = Refusals(metrics.client_events, asyncio.get_running_loop().time)
        limit = PayloadLimit(
            max_payload_bytes,
            metrics,
            self.refusals,
            lambda eio_sid: self.sio.manager.sid_from_eio_sid(eio_sid, "/") or eio_sid,
            lambda eio_sid: eio_sid in self.sio.eio.sockets,
        )
        websocket = websocket_class(
            compress=compression, too_large=limit.websocket, not_engineio=limit.not_engineio
        )
        self._websockets = websocket.sockets
        self.sio = _Server(
            async_mode="aiohttp",
            client_manager=BroadcastManager(
                websocket.sockets,
                direct=direct_broadcast,
                max_queued=max_queued_events,
                count=metrics.delivered,
                dropped=metrics.browsers_dropped.labels("backlog").inc,
                recovery=recovery,
                shared=shared,
            ),
            json=jsonwire,
            cors_allowed_origins="*"
            if cors_origins == "*"
            else origins_check(cors_origins, metrics),
            max_http_buffer_size=max_payload_bytes,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            logger=False,
            engineio_logger=False,
        )
        # python-engineio takes its WebSocket class from its driver table: ours adds the
        # compression setting and what the direct broadcast path needs; and its request
        # translation, which hands polling bodies over with a reader of ours.
        node_engine(self.sio.eio)
        self.sio.eio._async = {
            **self.sio.eio._async,
            "websocket": websocket,
            "translate_request": engine_translation(trusts),
        }
        self.sio.clients = self.clients = ConnectionLimit(
            max_connections_per_client, trusts, self.sio.eio.sockets, metrics
        )
        self.app = web.Application(
            middlewares=[
                engine_gate(socketio_path, self.clients, limit, max_payload_bytes, metrics)
            ],
            client_max_size=max(max_payload_bytes, 1024**2),
        )
        self.sio.attach(self.app, socketio_path=socketio_path)
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        self.sio.on(ROOM_JOIN, self._room_join)
        self.sio.on(ROOM_LEAVE, self._room_leave)
        self.sio.on("*", self._client_event)
        self.sio.on_undecodable = self._undecodable
        self.sio.on_invalid = lambda eio_sid: self._refuse(
            "other", "packet_invalid", self.sio.manager.sid_from_eio_sid(eio_sid, "/") or eio_sid
        )
        self.sio.client_packets = self._client_packets = ClientPackets(max_payload_bytes)
        self.sio.refusals = self.refusals
        self.sio.screen = self._screen
        self.sio.on_refused = lambda sid, event, reason: self._refuse(str(event), reason, sid)
        self.sio.rate_allows = self.rate_limit.allow
        self.sio.admit = self._admit
        self.sio._connect_attempts = {}
        self.recovery = recovery
        self.sio.recovery = recovery
        self.sio.pids = {}
        self.sio.persisted = set()
        self.sio.on_recovery = self._recovery_outcome
        self.sio.release = lambda session: self._release_rooms(session.sid)
        self.sio.rejoin = self._rejoin_rooms
        self.shared = self.sio.shared = shared if recovery is not None else None
        self.sio.left = {}
        self._gone_once: set[str] = set()  # kept sessions found gone at the last sweep

    def sizes(self) -> dict[str, int]:
        """Entries of each table kept per browser; all 0 once every browser has left."""
        manager = self.sio.manager
        return {
            "browser_engine_sockets": len(self.sio.eio.sockets),
            "browser_websockets": len(self._websockets),
            "browser_sessions": sum(len(rooms.get(None, ())) for rooms in manager.rooms.values())
            + sum(len(sids) for sids in manager.pending_connect.values()),
            "browser_environs": len(self.sio.environ),
            "browser_room_members": sum(
                len(members) for rooms in manager.rooms.values() for members in rooms.values()
            ),
            "browser_backlogs": manager.backlogs,
            "browser_rate_buckets": len(self.rate_limit),
            "browser_backend_rooms": len(self.membership),
            "browser_refusal_logs": len(self.refusals),
            **self.clients.sizes(),
            "browser_credentials": len(self._credentials),
            "browser_expiry_timers": len(self._expiries),
            "browser_pids": len(self.sio.pids),
            "browser_unrecoverable": len(self.sio.manager.unrecoverable),
            **(
                {"recovery_sessions": 0, "recovery_events": 0}
                if self.recovery is None
                else self.recovery.sizes()
            ),
            **({} if self.shared is None else {"recovery_sessions": len(self.sio.left)}),
        }

    async def emit(self, action: Emit) -> None:
        """Carry out an :class:`Emit` of the join."""
        started = time.perf_counter()
        if action.raw is not None:
            await self.sio.manager.emit_encoded(action.raw, room=action.room)
        else:
            await self.sio.emit(action.event, as_socketio_data(action.args), to=action.room)
        label = event_label(action.event)
        self._metrics.emit_seconds.labels(label).observe(time.perf_counter() - started)
        self._metrics.emitted(action.event)

    async def expire_sessions(self) -> None:
        """Forever: let go of the sessions of browsers that did not come back in time
        (their backend rooms above all)."""
        recovery = self.recovery
        if recovery is None:
            return
        every = min(recovery.max_disconnection / 2, 5.0)
        while True:
            await asyncio.sleep(every)
            if self.shared is not None:
                await self._sweep_shared(self.shared)
            for session in recovery.expired():
                log.info("browser_session_expired", sid=session.sid)
                try:
                    await self._release_rooms(session.sid)
                except Exception:  # the next sessions still go
                    log.exception("browser_session_release_failed", sid=session.sid)

    async def _sweep_shared(self, shared: SharedLog) -> None:
        """Let go of the rooms of the sessions this replica kept in the shared store once
        they are gone from it (given back, here or at another replica, or expired) at two
        sweeps in a row: a replica that gave one back has joined its rooms by then."""
        left = self.sio.left
        if not left or not shared.up:
            return
        try:
            kept = await shared.kept(list(left))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("recovery_store_failed", error=repr(exc))
            return
        gone = {pid for pid in left if pid not in kept}
        for pid in gone & self._gone_once:
            sid = left.pop(pid)
            if sid in self.sio.pids:  # given back here: its rooms are its own again
                continue
            log.info("browser_session_gone", sid=sid)
            try:
                await self._release_rooms(sid)
            except Exception:  # the next sessions still go
                log.exception("browser_session_release_failed", sid=sid)
        self._gone_once = gone - self._gone_once

    def renumber(self, position: int) -> None:
        """The numbers of events start anew at ``position`` (a shared sequence reached or
        started again): each connected browser has every event before it."""
        pids = self.sio.pids
        for sid, (pid, _, holder) in list(pids.items()):
            pids[sid] = (pid, position, holder)

    async def handed_over(self, timeout: float) -> None:
        """Until every session this replica kept in the shared store is gone from it (its
        browser recovered elsewhere), or ``timeout``; then its rooms may be left."""
        shared = self.shared
        if shared is None or not self.sio.left:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.sio.left:
                    try:
                        kept = await shared.kept(list(self.sio.left))
                    except (RedisError, OSError, TimeoutError):
                        return
                    for pid in [pid for pid in self.sio.left if pid not in kept]:
                        del self.sio.left[pid]
                    if self.sio.left:
                        await asyncio.sleep(0.1)
                # the replica that gave the last one back sends its room:join right after
                await asyncio.sleep(HANDOVER_MARGIN)

    async def _rejoin_rooms(self, sid: str, session: Session) -> None:
        """A session given back (kept here, or at another replica): exactly its backend
        rooms (a session kept here earlier may have had others)."""
        wanted = {room[5:] for room in session.rooms if room.startswith("room:")}
        for room_id in self.membership.rooms_of(sid) - wanted:
            if self.membership.leave(sid, room_id):
                await self._backend_room(ROOM_LEAVE, room_id)
        for room_id in wanted:
            if self.membership.join(sid, room_id):
                await self._backend_room(ROOM_JOIN, room_id)

    async def _recovery_outcome(self, sid: str, outcome: str, given_up: Session | None) -> None:
        """A browser that presented its session's pid: ``recovered``, or why not (then
        told to refetch, once connected); ``given_up``: a session it did not get back."""
        self._metrics.recoveries.labels(outcome).inc()
        if given_up is not None:
            await self._release_rooms(given_up.sid)
        if outcome == "recovered":
            log.info("browser_recovered", sid=sid)
            return
        log.info("browser_not_recovered", sid=sid, reason=outcome)
        if outcome != "refused":
            await self.sio.emit(RESYNC, {"reason": "recovery_failed"}, to=sid)
            self._metrics.resyncs.labels("recovery_failed").inc()

    async def _release_rooms(self, sid: str) -> None:
        for room_id in self.membership.drop(sid):
            await self._backend_room(ROOM_LEAVE, room_id)

    async def rejoin_rooms(self) -> None:
        """After a new backend connection: join again every room a browser is in."""
        for room_id in self.membership.rooms():
            await self._backend_room(ROOM_JOIN, room_id)

    async def close(self) -> None:
        """Refuse new browsers and close every connection at the engine.io level, so that
        socket.io-client reconnects by itself (to another replica)."""
        self.accepting = False
        sockets = list(self.sio.eio.sockets.values())
        await asyncio.gather(*(self._close_engine_socket(socket) for socket in sockets))

    async def _close_engine_socket(self, socket: Any) -> None:
        await close_engine_socket(self.sio.eio, self._websockets, socket)

    async def _admit(self, eio_sid: str, auth: Any, attempt: int) -> tuple[Credentials, Admission]:
        """Check a connecting browser's credentials (``attempt``: how many times this
        connection has asked); raises :class:`Refused`, logged and counted."""
        environ = self.sio.environ.get(eio_sid, {})
        if self.recovery is not None and isinstance(auth, dict):
            # socket.io-client's own keys for recovery: not credentials, and not for the
            # backend (a browser's own backend connection presents its auth)
            auth = {key: value for key, value in auth.items() if key not in RECOVERY_KEYS}
        credentials = Credentials.from_handshake(environ, auth)
        try:
            if attempt > MAX_CONNECT_ATTEMPTS:  # socket.io-client asks once per connection
                raise Refused("too_many_attempts")
            async with asyncio.timeout(self._auth_timeout):
                admission = await self._gate.admit(credentials)
        except Exception as exc:
            if isinstance(exc, Refused):
                refused = exc
            elif isinstance(exc, TimeoutError):
                refused = Refused("auth_unavailable")
            else:  # a check that broke refuses: never admitted by accident
                log.exception("browser_admission_failed")
                refused = Refused("auth_error")
            if attempt <= MAX_CONNECT_ATTEMPTS + 1:  # not a line for each of a flood
                log.warning(
                    "browser_refused", reason=refused.reason, remote=environ.get("REMOTE_ADDR")
                )
            self._metrics.browser_admissions.labels(refused.reason).inc()
            raise refused from None
        self._metrics.browser_admissions.labels("admitted").inc()
        return credentials, admission

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if not self.accepting:
            raise socketio.exceptions.ConnectionRefusedError("shutting_down")
        credentials, admission = _admitted.get()
        self._credentials[sid] = credentials
        self._watch(sid, admission)
        self._metrics.browsers.inc()
        log.debug("browser_connected", sid=sid, remote=environ.get("REMOTE_ADDR"))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    def _watch(self, sid: str, admission: Admission) -> None:
        """At the end of a browser's admission: :meth:`_lapse`."""
        if admission.expires_at is not None:
            self._expiries[sid] = asyncio.get_running_loop().call_later(
                max(0.0, admission.expires_at - time.time()),
                lambda: self._background(self._lapse(sid, admission)),
            )

    async def _lapse(self, sid: str, admission: Admission) -> None:
        """A browser whose admission ended: admitted again (``auth.mode: backend``), or
        its credentials expired or were revoked: its connection is closed (engine.io level,
        so socket.io-client reconnects, presenting its credentials again)."""
        self._expiries.pop(sid, None)
        credentials = self._credentials.get(sid)
        if credentials is None:  # gone meanwhile
            return
        outcome = await renewal(self._gate, credentials, admission, self._auth_timeout)
        if isinstance(outcome, Admission):
            if sid in self._credentials:
                self._watch(sid, outcome)
            return
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            return
        log.info(f"browser_{outcome}", sid=sid)
        self._metrics.browsers_dropped.labels(outcome).inc()
        self.sio.manager.unrecoverable.add(sid)  # it must present credentials again
        engine_socket = self.sio.eio.sockets.get(eio_sid)
        if engine_socket is not None:
            await self._close_engine_socket(engine_socket)

    async def _disconnect(self, sid: str, reason: str | None = None) -> None:
        self._metrics.browsers.dec()
        kept = sid in self.sio.persisted  # its session may come back: its rooms stay
        log.debug("browser_disconnected", sid=sid, reason=str(reason), recoverable=kept)
        self.sio.pids.pop(sid, None)
        self.sio.manager.unrecoverable.discard(sid)
        self.rate_limit.forget(sid)
        self._credentials.pop(sid, None)
        expiry = self._expiries.pop(sid, None)
        if expiry is not None:
            expiry.cancel()
        if not kept:
            await self._release_rooms(sid)

    async def _backend_room(self, event: str, room_id: str) -> None:
        try:
            await self._backend.emit(event, ({"room_id": room_id},))
        except UpstreamUnavailable:
            # Rooms are joined again on the next connection.
            log.info("backend_room_deferred", event=event, room_id=room_id)

    def _room_of(self, args: tuple[Any, ...]) -> str:
        payload = args[0] if args else None
        if not isinstance(payload, dict):
            raise Rejected("not_an_object")
        return room_id_of(payload.get("room_id"))

    async def _room_join(self, sid: str, *args: Any) -> dict[str, Any]:
        try:
            room_id = self._room_of(args)
        except Rejected as exc:
            return self._refuse(ROOM_JOIN, exc.reason, sid)
        if self._room_access is not None:
            try:
                await self._room_access.check(self._credentials.get(sid, Credentials()), room_id)
            except Refused as exc:
                return self._refuse(ROOM_JOIN, exc.reason, sid)
            if sid not in self._credentials:  # it left while the backend was asked
                return {"error": "disconnected", "event": ROOM_JOIN}
        await self.sio.enter_room(sid, f"room:{room_id}")
        self._metrics.client_events.labels(ROOM_JOIN, "handled").inc()
        if self.membership.join(sid, room_id):
            await self._backend_room(ROOM_JOIN, room_id)
        return {"ok": True, "room_id": room_id}

    async def _room_leave(self, sid: str, *args: Any) -> dict[str, Any]:
        try:
            room_id = self._room_of(args)
        except Rejected as exc:
            return self._refuse(ROOM_LEAVE, exc.reason, sid)
        await self.sio.leave_room(sid, f"room:{room_id}")
        self._metrics.client_events.labels(ROOM_LEAVE, "handled").inc()
        if self.membership.leave(sid, room_id):
            await self._backend_room(ROOM_LEAVE, room_id)
        return {"ok": True, "room_id": room_id}

    async def _undecodable(self, eio_sid: str, packet: str) -> None:
        """A browser event too deeply nested to decode: refused, with an error ack if the
        browser asked for one."""
        found = event_packet(packet)
        event, ack_id = (found[0], found[1]) if found else ("other", None)
        sid = self.sio.manager.sid_from_eio_sid(eio_sid, "/") or eio_sid
        await self.sio.ack(eio_sid, ack_id, self._refuse(event, "payload_too_deep", sid))

    async def _screen(self, eio_sid: str, data: str | bytes) -> bool:
        """Whether a browser message may reach python-socketio (client_packets); one that
        may not gets its error (its ack, or its connection closed), a log line, a metric."""
        socket = self.sio.eio.sockets.get(eio_sid)
        if socket is None or socket.closed:
            return False  # what was still on its way from a browser enricher closed
        checks = self._client_packets
        verdict = checks.check(eio_sid, data)
        if verdict is Verdict.PASS:
            return True
        if isinstance(verdict, Refusal):
            sid = self.sio.manager.sid_from_eio_sid(eio_sid, verdict.namespace) or eio_sid
            answer = self._refuse(verdict.event, verdict.reason, sid, verdict.close)
            if verdict.ack_id is not None and verdict.namespace == "/":
                await self.sio.ack(eio_sid, verdict.ack_id, answer)
            if verdict.close and not socket.closing:
                self.sio._binary_packet.pop(eio_sid, None)
                # not awaited here: the close waits for this very message's handler
                self._background(self._close_engine_socket(socket))
        return False

    def _refuse(self, event: str, reason: str, sid: str, closing: bool = False) -> dict[str, Any]:
        """The error ack of a browser event that is not forwarded, logged and counted."""
        browser = self.sio.manager.eio_sid_from_sid(sid, "/") or sid
        return self.refusals.refuse(browser, event, reason, sid, closing)

    async def _client_event(self, event: str, sid: str, *args: Any) -> Any:
        if self._allowed is not None and event not in self._allowed:
            return self._refuse(event, "event_not_allowed", sid)
        try:
            answer = await self._forward(sid, event, args)
        except UpstreamUnavailable:
            return self._refuse(event, "upstream_unavailable", sid)
        except TimeoutError:
            return self._refuse(event, "ack_timeout", sid)
        self._metrics.client_events.labels(event_label(event), "forwarded").inc()
        return answer

    async def _forward(self, sid: str, event: str, args: tuple[Any, ...]) -> Any:
        """A browser's event to the backend, on the shared connection; the backend's ack
        if the browser asked for one."""
        if _ack_requested.get():
            return await self._backend.call(event, args, self._ack_timeout)
        await self._backend.emit(event, args)
        return None
