"""The browsers' side: a Socket.IO server on aiohttp that looks like the backend.

Browsers connect exactly as they connected to the backend. Their ``room:join`` puts them
in the local room ``room:<id>`` (the proxy joins the backend's room once, for all of
them: :mod:`.backend_rooms`); every other browser event goes to the backend on the
proxy's connection, with its ack relayed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import socketio
import structlog

from . import jsonwire
from .access import Admission, Credentials, Gate, OpenGate, Refused, RoomAccess, renewal
from .admin_view import UNWATCHED, BrowserWatch
from .admission import EngineSettings, PayloadLimit, engine_translation
from .backend_rooms import ROOM_JOIN, ROOM_LEAVE, BackendRooms, room_of
from .background import Background
from .browsers import BrowserServer, ack_requested, admitted
from .client_packets import ClientPackets, Refusal, Verdict
from .clients import ConnectionLimit
from .fanout import BroadcastManager
from .internals.engine import close_engine_socket, node_engine
from .internals.websocket import websocket_class
from .join_types import Emit
from .jsonwire import event_packet
from .metrics import Metrics, event_label
from .payloads import Rejected
from .recovery import Recovery, Session
from .refusals import RateLimit, Refusals
from .shared import STORE_ERRORS, SharedLog
from .upstream import UpstreamUnavailable, as_socketio_data

log = structlog.get_logger("enricher.downstream")

RESYNC = "enricher:resync"  # events may have been missed, refetch (to every browser, or one)
# What socket.io-client adds to the CONNECT auth of a socket that may recover its session.
RECOVERY_KEYS = frozenset({"pid", "offset"})

# CONNECT packets one engine.io connection may send before it is refused unchecked.
MAX_CONNECT_ATTEMPTS = 3
# After the last session kept at shutdown was given back elsewhere, how long the replica that
# gave it back is given to join its backend rooms before this one leaves them.
HANDOVER_MARGIN = 0.5


class BackendPort(Protocol):
    """What the browsers' side needs of the backend connection."""

    @property
    def connected(self) -> bool: ...

    async def emit(self, event: str, args: tuple[Any, ...]) -> None: ...

    async def call(self, event: str, args: tuple[Any, ...], timeout: float) -> Any: ...


@dataclass(frozen=True)
class DownstreamSettings:
    """What browsers may send and how it reaches the backend, in shared mode; and how
    broadcasts reach them."""

    client_events: list[str] | str  # the events forwarded ("*": all)
    ack_timeout: float
    client_event_rate: float = 0.0  # per browser, per second (0: no limit)
    client_event_burst: int = 1
    auth_timeout: float = 2.0
    direct_broadcast: bool = True
    max_queued_events: int = 1000


class Downstream:
    """The Socket.IO server browsers connect to, mounted on an aiohttp app."""

    def __init__(
        self,
        backend: BackendPort,
        metrics: Metrics,
        engine: EngineSettings,
        settings: DownstreamSettings,
        *,
        trusts: Callable[[str | None], bool] = lambda peer: False,
        gate: Gate | None = None,
        room_access: RoomAccess | None = None,
        recovery: Recovery | None = None,
        shared: SharedLog | None = None,
        view: BrowserWatch = UNWATCHED,
    ) -> None:
        self._backend = backend
        self.view = view  # the Admin UI's, when it is on
        self._metrics = metrics
        self._allowed = None if settings.client_events == "*" else frozenset(settings.client_events)
        self._ack_timeout = settings.ack_timeout
        self.rate_limit = RateLimit(
            settings.client_event_rate,
            settings.client_event_burst,
            asyncio.get_running_loop().time,
        )
        self.accepting = True
        self.backend_rooms = BackendRooms(backend.emit)
        self._gate = gate or OpenGate()
        self._room_access = room_access
        self._auth_timeout = settings.auth_timeout
        self._credentials: dict[str, Credentials] = {}
        self._expiries: dict[str, asyncio.TimerHandle] = {}
        self._tasks = Background()
        self.refusals = Refusals(metrics.client_events, asyncio.get_running_loop().time)
        limit = PayloadLimit(
            engine.max_payload_bytes,
            metrics,
            self.refusals,
            self._sid_of,
            lambda eio_sid: eio_sid in self.sio.eio.sockets,
        )
        websocket = websocket_class(
            compress=engine.compression, too_large=limit.websocket, not_engineio=limit.not_engineio
        )
        self._websockets = websocket.sockets
        self.sio = BrowserServer(
            self,
            recovery=recovery,
            shared=shared,
            client_manager=BroadcastManager(
                websocket.sockets,
                direct=settings.direct_broadcast,
                max_queued=settings.max_queued_events,
                count=metrics.delivered,
                dropped=metrics.browsers_dropped.labels("backlog").inc,
                recovery=recovery,
                shared=shared,
            ),
            json=jsonwire,
            engineio_logger=False,
            **engine.options(metrics),
        )
        # python-engineio takes its WebSocket class from its driver table: ours adds the
        # compression setting and what the direct broadcast path needs; and its request
        # translation, which hands polling bodies over with a reader of ours.
        node_engine(self.sio.eio, websocket, engine_translation(trusts))
        view.watch(self.sio.eio)
        self.clients = ConnectionLimit(
            engine.max_connections_per_client, trusts, self.sio.eio.sockets, metrics
        )
        self.app = engine.application(self.clients, limit, metrics)
        self.sio.attach(self.app, socketio_path=engine.socketio_path)
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        self.sio.on(ROOM_JOIN, self._room_join)
        self.sio.on(ROOM_LEAVE, self._room_leave)
        self.sio.on("*", self._client_event)
        self._client_packets = ClientPackets(engine.max_payload_bytes)
        self.recovery = recovery
        self.shared = self.sio.shared
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
            "browser_backend_rooms": len(self.backend_rooms),
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
                    await self.backend_rooms.release(session.sid)
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
        except STORE_ERRORS as exc:
            log.warning("recovery_store_failed", error=repr(exc))
            return
        gone = {pid for pid in left if pid not in kept}
        for pid in gone & self._gone_once:
            sid = left.pop(pid)
            if sid in self.sio.pids:  # given back here: its rooms are its own again
                continue
            log.info("browser_session_gone", sid=sid)
            try:
                await self.backend_rooms.release(sid)
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
                    except STORE_ERRORS:
                        return
                    for pid in [pid for pid in self.sio.left if pid not in kept]:
                        del self.sio.left[pid]
                    if self.sio.left:
                        await asyncio.sleep(0.1)
                # the replica that gave the last one back sends its room:join right after
                await asyncio.sleep(HANDOVER_MARGIN)

    async def rejoin(self, sid: str, session: Session) -> None:
        """A session given back (kept here, or at another replica): exactly its backend
        rooms (a session kept here earlier may have had others)."""
        rooms = [room for room in session.rooms if room.startswith("room:")]
        await self.backend_rooms.set_rooms(sid, (room[5:] for room in rooms))
        for room in rooms:  # the browser is in them again
            self.view.joined("/", room, sid)

    async def recovery_outcome(self, sid: str, outcome: str, given_up: Session | None) -> None:
        """A browser that presented its session's pid: ``recovered``, or why not (then
        told to refetch, once connected); ``given_up``: a session it did not get back."""
        self._metrics.recoveries.labels(outcome).inc()
        if given_up is not None:
            await self.backend_rooms.release(given_up.sid)
        if outcome == "recovered":
            log.info("browser_recovered", sid=sid)
            return
        log.info("browser_not_recovered", sid=sid, reason=outcome)
        if outcome != "refused":
            await self.sio.emit(RESYNC, {"reason": "recovery_failed"}, to=sid)
            self._metrics.resyncs.labels("recovery_failed").inc()

    async def close(self) -> None:
        """Refuse new browsers and close every connection at the engine.io level, so that
        socket.io-client reconnects by itself (to another replica)."""
        self.accepting = False
        sockets = list(self.sio.eio.sockets.values())
        await asyncio.gather(*(self._close_engine_socket(socket) for socket in sockets))

    async def _close_engine_socket(self, socket: Any) -> None:
        await close_engine_socket(self.sio.eio, self._websockets, socket)

    async def admit(self, eio_sid: str, auth: Any, attempt: int) -> tuple[Credentials, Admission]:
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
        credentials, admission = admitted()
        self._credentials[sid] = credentials
        self._watch(sid, admission)
        self._metrics.browsers.inc()
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/") or ""
        self.view.connected("/", sid, eio_sid, self.view.describe(environ))
        log.debug("browser_connected", sid=sid, remote=environ.get("REMOTE_ADDR"))

    def _watch(self, sid: str, admission: Admission) -> None:
        """At the end of a browser's admission: :meth:`_lapse`."""
        if admission.expires_at is not None:
            self._expiries[sid] = asyncio.get_running_loop().call_later(
                max(0.0, admission.expires_at - time.time()),
                lambda: self._tasks.start(self._lapse(sid, admission)),
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
        self.view.disconnected("/", sid, str(reason))
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
            await self.backend_rooms.release(sid)

    async def _room_join(self, sid: str, *args: Any) -> dict[str, Any]:
        try:
            room_id = room_of(args)
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
        self.view.joined("/", f"room:{room_id}", sid)
        self._metrics.client_events.labels(ROOM_JOIN, "handled").inc()
        await self.backend_rooms.join(sid, room_id)
        return {"ok": True, "room_id": room_id}

    async def _room_leave(self, sid: str, *args: Any) -> dict[str, Any]:
        try:
            room_id = room_of(args)
        except Rejected as exc:
            return self._refuse(ROOM_LEAVE, exc.reason, sid)
        await self.sio.leave_room(sid, f"room:{room_id}")
        self.view.left("/", f"room:{room_id}", sid)
        self._metrics.client_events.labels(ROOM_LEAVE, "handled").inc()
        await self.backend_rooms.leave(sid, room_id)
        return {"ok": True, "room_id": room_id}

    async def undecodable(self, eio_sid: str, packet: str) -> None:
        """A browser event too deeply nested to decode: refused, with an error ack if the
        browser asked for one."""
        found = event_packet(packet)
        event, ack_id = (found[0], found[1]) if found else ("other", None)
        sid = self.sio.manager.sid_from_eio_sid(eio_sid, "/") or eio_sid
        await self.sio.ack(eio_sid, ack_id, self._refuse(event, "payload_too_deep", sid))

    async def screen(self, eio_sid: str, data: str | bytes) -> bool:
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
                self.sio.forget_attachments(eio_sid)
                browser = self.sio.manager.sid_from_eio_sid(eio_sid, "/")
                if browser is not None:  # as socket.io's server after a parse error
                    self.sio.manager.unrecoverable.add(browser)
                # not awaited here: the close waits for this very message's handler
                self._tasks.start(self._close_engine_socket(socket))
        return False

    def connected(self, eio_sid: str, environ: dict[str, Any]) -> None:
        self.clients.connected(eio_sid, environ)

    def disconnected(self, eio_sid: str) -> None:
        self.clients.disconnected(eio_sid)
        self._client_packets.forget(eio_sid)
        self.refusals.forget(eio_sid)

    def invalid(self, eio_sid: str) -> None:
        self._refuse("other", "packet_invalid", self._sid_of(eio_sid))

    def rate_allows(self, sid: str) -> bool:
        return self.rate_limit.allow(sid)

    def refused(self, sid: str, event: Any, reason: str) -> dict[str, Any]:
        return self._refuse(str(event), reason, sid)

    async def release(self, session: Session) -> None:
        await self.backend_rooms.release(session.sid)

    def _sid_of(self, eio_sid: str) -> str:
        """A browser's sid in namespace ``/`` where it has one, else its engine.io sid."""
        return self.sio.manager.sid_from_eio_sid(eio_sid, "/") or eio_sid

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
        if ack_requested():
            return await self._backend.call(event, args, self._ack_timeout)
        await self._backend.emit(event, args)
        return None
