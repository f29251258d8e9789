"""Transparent mode's engine.io server: every browser connection a :class:`~.sessions.Session`
with its own backend connection (see enricher/sessions.py); admission, recovery of a
browser that comes back, and the end of each. What the sessions share (one ``GET
/rooms/<id>`` per room for all of them, the backend's events read once) is in
enricher/across_sessions.py.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import engineio
import structlog
from aiohttp import WSCloseCode, web

from . import packets
from .access import HANDSHAKE_CREDENTIALS, Admission, Credentials, Gate, Refused, renewal
from .across_sessions import SharedReading, SharedRooms
from .admin_view import UNWATCHED, BrowserWatch
from .admission import EngineSettings, PayloadLimit, engine_translation
from .backend_socket import BackendSocket, BackendUnavailable, Message, backend_url
from .background import Background
from .browsers import RESERVED_EVENTS
from .client_packets import ClientPackets, Refusal
from .clients import ConnectionLimit
from .driver import JoinDriver
from .internals.engine import close_engine_socket, node_engine
from .internals.websocket import websocket_class
from .join import Join
from .join_types import JoinLimits, NewRoomMode
from .metrics import Metrics, event_label
from .proxy_rules import Rules, request_headers
from .refusals import RateLimit, Refusals
from .sessions import (
    Session,
    connect_auth,
    replay,
)

log = structlog.get_logger("enricher.sessions")

# Headers of the browser's WebSocket handshake that are its own connection's, not the
# backend's (aiohttp makes its own).
_WEBSOCKET_OWN = ("sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions")


@dataclass(frozen=True)
class RelaySettings:
    """What the relay is told by the composition root."""

    backend: str  # the backend's Socket.IO base URL
    backend_path: str  # its Socket.IO path
    connect_timeout: float
    client_events: frozenset[str] | None  # None: every event
    max_queued_events: int
    auth_timeout: float
    limits: JoinLimits
    new_room_mode: NewRoomMode
    # Connection state recovery by enricher, for backends without their own (None: off):
    # how long a browser may be away, and how many messages are kept for it meanwhile.
    max_disconnection: float | None = None
    max_missed: int = 10_000
    heartbeat: float = 45.0  # the browsers' ping interval and timeout


class Relay:
    """The browsers' side in transparent mode: an engine.io server on aiohttp whose every
    connection is a :class:`Session`."""

    def __init__(
        self,
        settings: RelaySettings,
        engine: EngineSettings,
        metrics: Metrics,
        http: aiohttp.ClientSession,
        rooms: SharedRooms,
        *,
        rules: Rules,
        tls: Any,
        gate: Gate | None,
        rate_limit: RateLimit,
        view: BrowserWatch = UNWATCHED,
    ) -> None:
        self.settings = settings
        self.view = view  # the Admin UI's, when it is on
        self.metrics = metrics
        self.rooms = rooms
        self.reading = SharedReading()
        self.client_packets = ClientPackets(engine.max_payload_bytes)
        self._http = http
        self._rules = rules
        self._tls = tls
        self._gate = gate
        self._rate_limit = rate_limit
        self.refusals = Refusals(metrics.client_events, asyncio.get_running_loop().time)
        self.sessions: dict[str, Session] = {}
        self.kept: dict[str, Session] = {}  # by pid: sessions whose browser is away
        # Offsets are <epoch>.<n>: an offset another process gave is not taken for one of ours.
        self.epoch = secrets.token_hex(4)
        self.accepting = True
        self.backend_reachable = True  # the latest backend connection attempt reached it
        self._tasks = Background()
        limit = PayloadLimit(
            engine.max_payload_bytes,
            metrics,
            self.refusals,
            lambda eio_sid: eio_sid,
            lambda sid: sid in self.sessions,
        )
        websocket = websocket_class(
            compress=engine.compression, too_large=limit.websocket, not_engineio=limit.not_engineio
        )
        self.websockets = websocket.sockets
        # each browser's messages handled in order, no task each: async_handlers off
        self.eio = engineio.AsyncServer(async_handlers=False, **engine.options(metrics))
        node_engine(self.eio, websocket, engine_translation(rules.trusts))
        self.eio.on("connect", self._connect)
        self.eio.on("message", self._message)
        self.eio.on("disconnect", self._disconnect)
        view.watch(self.eio)
        self.clients = ConnectionLimit(
            engine.max_connections_per_client, rules.trusts, self.eio.sockets, metrics
        )
        self.app = engine.application(self.clients, limit, metrics, shield_websockets=True)
        self.eio.attach(self.app, engineio_path=engine.socketio_path)

    def join_driver(self, session: Session) -> JoinDriver:
        join = Join(
            limits=self.settings.limits,
            new_room_mode=self.settings.new_room_mode,
            parsers=self.reading.parsers,
        )
        return JoinDriver(
            join,
            session.fetch_room,
            None,
            self.metrics,
            send=session.emit,
            fields={"sid": session.sid},
        )

    def sizes(self) -> dict[str, int]:
        """Entries of each table kept per browser; all 0 once every browser has left."""
        return {
            "browser_engine_sockets": len(self.eio.sockets),
            "browser_websockets": len(self.websockets),
            "browser_sessions": len(self.sessions),
            "recovery_sessions": len(self.kept),
            "recovery_events": sum(len(s.sent) for s in self.kept.values() if s.sent),
            "browser_rate_buckets": len(self._rate_limit),
            "browser_backlogs": sum(1 for s in self.eio.sockets.values() if s.queue.unwritten),
            "browser_refusal_logs": len(self.refusals),
            **self.clients.sizes(),
            "browser_binary_packets": len(self.client_packets),
            "session_rooms_held": sum(s.rooms_held for s in self.sessions.values()),
            "shared_room_answers": len(self.rooms),
        }

    # -- engine.io handlers --------------------------------------------------------------

    async def _connect(self, eio_sid: str, environ: dict[str, Any]) -> bool | str:
        """A browser's handshake: answered once its own backend connection is open."""
        self.clients.connected(eio_sid, environ)
        if not self.accepting:
            return "shutting_down"
        request: web.Request = environ["aiohttp.request"]
        headers = request_headers(
            request.headers,
            request.remote,
            request.scheme,
            request.host,
            self._rules.trusts(request.remote),
        )
        for name in _WEBSOCKET_OWN:
            headers.popall(name, None)
        url = backend_url(
            self.settings.backend, self.settings.backend_path, list(request.query.items())
        )
        session = Session(
            self,
            eio_sid,
            lambda session: BackendSocket(self._http, session.from_backend, self._tls),
        )
        backend = session.backend
        session.seen = self.view.describe(environ)
        if self._gate is not None:
            session.handshake = {k: environ[k] for k in HANDSHAKE_CREDENTIALS if k in environ}
        try:
            await backend.open(url, headers, self.settings.connect_timeout)
        except BackendUnavailable as exc:
            self.backend_reachable = exc.reason == "refused"
            self.metrics.backend_connects.labels(exc.reason).inc()
            log.warning(
                "backend_connect_failed",
                reason=exc.reason,
                detail=exc.detail,
                remote=request.remote,
            )
            return "backend_unavailable"
        self.backend_reachable = True
        self.metrics.backend_connects.labels("connected").inc()
        if eio_sid not in self.eio.sockets:  # the browser left meanwhile
            await backend.close()
            return "gone"
        self.sessions[eio_sid] = session
        self.metrics.browsers.inc()
        self.metrics.browser_upstream_connections.set(len(self.sessions))
        session.reader = self._tasks.start(session.run())
        log.debug("browser_connected", sid=eio_sid, remote=request.remote)
        return True

    async def _message(self, eio_sid: str, data: Message) -> None:
        session = self.sessions.get(eio_sid)
        if session is not None:
            await session.from_browser(data)

    async def _disconnect(self, eio_sid: str, reason: Any = None) -> None:
        self.clients.disconnected(eio_sid)
        self.refusals.forget(eio_sid)
        session = self.sessions.pop(eio_sid, None)
        if session is None:
            return
        self.metrics.browsers.dec()
        self.client_packets.forget(eio_sid)
        self._rate_limit.forget(eio_sid)
        kept = self._keep(session, reason)
        for namespace, sid in session.sockets.items():
            self.view.disconnected(namespace, sid, str(reason))
        log.debug("browser_disconnected", sid=session.sid, reason=str(reason), recoverable=kept)
        if not kept and not session.closing:
            await session.close()
        self.metrics.browser_upstream_connections.set(len(self.sessions) + len(self.kept))

    def _keep(self, session: Session, reason: Any) -> bool:
        """A browser whose connection was lost, not left on purpose (it would have sent its
        DISCONNECT first) nor closed by enricher: its backend connection stays, and what
        comes meanwhile is kept for its return."""
        window = self.settings.max_disconnection
        if (
            window is None
            or session.pid is None
            or session.sent is None
            or session.closing
            or not self.accepting
            or session.namespaces != {"/"}
            or reason == "server disconnect"
            or self._going_away(session.eio_sid)
        ):
            return False
        assert session.sent is not None
        session.away_from = session.sent.last + 1  # what it was sent before may have arrived
        session.away = asyncio.get_running_loop().call_later(
            window, lambda: self.forget(session, "expired")
        )
        self.kept[session.pid] = session
        return True

    def _going_away(self, eio_sid: str) -> bool:
        """Whether the browser closed its WebSocket as a page being left does (1001, going
        away): a tab closed, not a network lost. Its backend connection ends at once, so
        the backend's presence is right."""
        websocket = self.websockets.get(eio_sid)
        return websocket is not None and websocket.close_code == WSCloseCode.GOING_AWAY

    def forget(self, session: Session, reason: str) -> None:
        """A kept session nobody came back for in time (or that missed too much): its
        backend connection is closed now, as the browser's was."""
        if session.pid is None or self.kept.get(session.pid) is not session:
            return
        del self.kept[session.pid]
        log.info("browser_session_expired", sid=session.sid, reason=reason)
        self.metrics.browser_upstream_connections.set(len(self.sessions) + len(self.kept))
        self._tasks.start(session.close())

    def resume(self, fresh: Session, pid: str, offset: object) -> bool:
        """A browser back after a blip presenting its session's pid: its kept session (its
        backend connection, its join) takes the new connection over, with every message
        it missed, then its CONNECT answer again; ``fresh``'s backend connection, which no
        namespace was opened on, is closed. False when it cannot be given back."""
        kept = self.kept.get(pid)
        epoch, _, count = offset.partition(".") if isinstance(offset, str) else ("", "", "")
        number = (
            int(count)
            if epoch == self.epoch and count.isascii() and count.isdigit() and len(count) < 16
            else None
        )
        missed = None
        if kept is None or kept.holder != fresh.holder or kept.closing or fresh.closing:
            outcome = "unknown_session"
        elif kept.sent is None or number is None or (missed := kept.sent.after(number)) is None:
            outcome = "unknown_offset"
        else:
            outcome = "recovered"
        self.metrics.recoveries.labels(outcome).inc()
        if kept is None or missed is None:
            log.info("browser_not_recovered", sid=fresh.eio_sid, reason=outcome)
            if kept is not None:
                self.forget(kept, outcome)
            return False
        del self.kept[pid]
        assert kept.away is not None and number is not None
        kept.away.cancel()
        kept.away = None
        self.sessions[fresh.eio_sid] = kept
        kept.eio_sid = fresh.eio_sid
        if kept.expiry is not None:
            kept.expiry.cancel()
        kept.expiry = fresh.expiry  # the new credentials' expiry
        fresh.expiry = None
        kept.seen = fresh.seen
        for namespace, sid in kept.sockets.items():
            self.view.connected(namespace, sid, kept.eio_sid, kept.seen)
        fresh.closing = True
        self._tasks.start(fresh.close())
        for message in replay(missed, number + 1, kept.away_from, self.epoch):
            if kept.closing:  # dropped for its backlog meanwhile
                return True
            kept._write(message)
        kept._write(kept.connected_answer)
        log.info("browser_recovered", sid=kept.sid, missed=len(missed))
        return True

    # -- what the relay decides ----------------------------------------------------------

    async def admit(self, session: Session, text: str, header: packets.Header) -> bool:
        """Check a CONNECT's credentials with ``auth.mode`` (the backend checks them too);
        a refused one gets a ``connect_error`` from enricher and never reaches the backend."""
        if self._gate is None:
            return True
        environ = session.handshake
        auth = connect_auth(text, header)
        if isinstance(auth, dict):  # socket.io-client's own keys for recovery
            auth = {k: v for k, v in auth.items() if k not in ("pid", "offset")}
        credentials = Credentials.from_handshake(environ, auth)
        reason: str | None = None
        try:
            async with asyncio.timeout(self.settings.auth_timeout):
                admission = await self._gate.admit(credentials)
        except Refused as exc:
            reason = exc.reason
        except TimeoutError:
            reason = "auth_unavailable"
        except Exception:  # a check that broke refuses: never admitted by accident
            log.exception("browser_admission_failed")
            reason = "auth_error"
        if reason is not None:
            log.warning("browser_refused", reason=reason, sid=session.eio_sid)
            self.metrics.browser_admissions.labels(reason).inc()
            session.to_browser(
                packets.connect_error("unauthorized", {"reason": reason}, header.namespace)
            )
            return False
        self.metrics.browser_admissions.labels("admitted").inc()
        session.holder = admission.holder
        if session.expiry is None:
            self._watch(session, credentials, admission)
        return True

    def _watch(self, session: Session, credentials: Credentials, admission: Admission) -> None:
        """At the end of a browser's admission: :meth:`_lapse`."""
        if admission.expires_at is not None:
            eio_sid = session.eio_sid  # a recovered session takes its returning browser's
            session.expiry = asyncio.get_running_loop().call_later(
                max(0.0, admission.expires_at - time.time()),
                lambda: self._tasks.start(self._lapse(eio_sid, credentials, admission)),
            )

    async def _lapse(self, eio_sid: str, credentials: Credentials, admission: Admission) -> None:
        """A browser whose admission ended: admitted again (``auth.mode: backend``), or
        its credentials expired or were revoked: it is disconnected (and reconnects,
        presenting its credentials again)."""
        assert self._gate is not None  # an admission is the gate's
        outcome = await renewal(self._gate, credentials, admission, self.settings.auth_timeout)
        session = self.sessions.get(eio_sid)
        if session is None or session.closing:
            return  # gone meanwhile (away, it is checked again when it comes back)
        session.expiry = None
        if isinstance(outcome, Admission):
            self._watch(session, credentials, outcome)
            return
        log.info(f"browser_{outcome}", sid=session.sid)
        self.metrics.browsers_dropped.labels(outcome).inc()
        await self.close_browser(session)

    def refusal(self, session: Session, text: str, header: packets.Header) -> dict[str, Any] | None:
        """Why a browser event is not sent to the backend (its error ack), or None. Its
        name is a string: client_packets refused it otherwise."""
        name = packets.event_name(text, header) or ""
        if not self._rate_limit.allow(session.eio_sid):
            reason = "rate_limited"
        elif name in RESERVED_EVENTS and name != "*":
            reason = "event_reserved"
        elif self.settings.client_events is not None and name not in self.settings.client_events:
            reason = "event_not_allowed"
        else:
            self.metrics.client_events.labels(event_label(name), "forwarded").inc()
            return None
        return self.refusals.refuse(session.eio_sid, name, reason, session.sid)

    async def refuse_packet(self, session: Session, refusal: Refusal) -> None:
        """A browser message that fails client_packets' checks: not sent on; the browser
        gets the error in its ack if it asked for one, or its connection is closed (as a
        Node server closes it for the same)."""
        answer = self.refusals.refuse(
            session.eio_sid, refusal.event, refusal.reason, session.sid, refusal.close
        )
        if refusal.ack_id is not None:
            session.to_browser(packets.ack(refusal.ack_id, (answer,), refusal.namespace))
        if refusal.close and not session.closing:
            session.closing = True  # nothing more of it is read
            self._tasks.start(self.close_browser(session))

    def drop(self, session: Session, reason: str) -> None:
        """A browser that stopped reading: disconnected, its backend connection closed."""
        if session.closing:
            return
        session.closing = True
        log.warning("browser_dropped", sid=session.sid, reason=reason)
        self.metrics.browsers_dropped.labels(reason).inc()
        self._tasks.start(self.close_browser(session))

    async def close_browser(self, session: Session) -> None:
        """Close a browser's connection at the engine.io level (after what was queued for
        it), and its backend connection."""
        session.closing = True
        socket = self.eio.sockets.get(session.eio_sid)
        if socket is not None:
            await close_engine_socket(self.eio, self.websockets, socket)
        await self._disconnect(session.eio_sid, "server disconnect")
        await session.close()

    async def close(self) -> None:
        """Refuse new browsers, send each held room, and close every connection, so that
        socket.io-client reconnects by itself (to another replica)."""
        self.accepting = False
        for session in list(self.kept.values()):
            self.forget(session, "shutdown")
        for session in list(self.sessions.values()):
            if session.driver is not None:
                await session.driver.flush("shutdown")
        await asyncio.gather(
            *(self.close_browser(session) for session in list(self.sessions.values()))
        )
