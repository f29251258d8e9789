"""The Socket.IO server browsers connect to: python-socketio's, with each CONNECT checked
before the browser is registered (:meth:`BrowserPolicy.admit`), Socket.IO connection state
recovery (a returning browser gets its session back, with the events it missed, before its
CONNECT answer, as socket.io does), and every browser message screened before
python-socketio reads it. What it asks of its owner is a :class:`BrowserPolicy`."""

from __future__ import annotations

import contextvars
from typing import Any, Protocol

import socketio
import structlog
from socketio import packet

from .access import Admission, Credentials, Refused
from .internals.sio import Server
from .recovery import NotRecovered, Recovered, Recovery, Session
from .shared import STORE_ERRORS, SharedLog

log = structlog.get_logger("enricher.downstream")

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

# Whether the browser event being handled asked for an ack: python-socketio does not tell
# handlers, and an ack must not be asked of the backend on behalf of a browser that did not.
_ack_requested: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ack_requested", default=False
)
# The credentials and admission of the browser being connected, for its connect handler.
_admitted: contextvars.ContextVar[tuple[Credentials, Admission]] = contextvars.ContextVar(
    "admitted"
)


def ack_requested() -> bool:
    """Whether the browser event being handled asked for an ack."""
    return _ack_requested.get()


def admitted() -> tuple[Credentials, Admission]:
    """The credentials and admission of the browser being connected (in its handler)."""
    return _admitted.get()


class BrowserPolicy(Protocol):
    """What the browsers' server asks of its owner."""

    async def admit(self, eio_sid: str, auth: Any, attempt: int) -> tuple[Credentials, Admission]:
        """Check a CONNECT's credentials (``attempt``: this connection's how many-th);
        raises :class:`Refused`."""

    def connected(self, eio_sid: str, environ: dict[str, Any]) -> None:
        """A new engine.io connection."""

    def disconnected(self, eio_sid: str) -> None:
        """An engine.io connection closed: forget what was kept of it."""

    async def screen(self, eio_sid: str, data: str | bytes) -> bool:
        """Whether a browser message may reach python-socketio (one that may not gets its
        answer there)."""

    async def undecodable(self, eio_sid: str, packet: str) -> None:
        """A packet nested too deeply to decode."""

    def invalid(self, eio_sid: str) -> None:
        """A packet python-socketio refuses (JSON it cannot decode, say)."""

    def rate_allows(self, sid: str) -> bool:
        """Whether a browser may send one more event now."""

    def refused(self, sid: str, event: Any, reason: str) -> dict[str, Any]:
        """The error ack of a browser event that is not handled, logged and counted."""

    async def recovery_outcome(self, sid: str, outcome: str, given_up: Session | None) -> None:
        """Told of each browser that presented a pid: what came of it."""

    async def release(self, session: Session) -> None:
        """A kept session nobody gets back."""

    async def rejoin(self, sid: str, session: Session) -> None:
        """A session given back: its rooms."""


class BrowserServer(Server):
    """python-socketio's server for the browsers (see the module).

    With ``recovery`` (None: off): ``pids``, each connected browser's pid, the last event
    number before its session started and its holder; ``persisted``, browsers whose session
    is kept while their disconnection is handled. With ``shared`` (the replicas' shared
    sequence; None: sessions kept in this process): ``left``, the sessions this replica
    kept there (pid: sid), whose rooms it holds until they go."""

    def __init__(
        self,
        policy: BrowserPolicy,
        *,
        recovery: Recovery | None,
        shared: SharedLog | None,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        self.policy = policy
        self.recovery = recovery
        self.shared = shared if recovery is not None else None
        self.connect_attempts: dict[str, int] = {}
        self.pids: dict[str, tuple[str, int, str | None]] = {}
        self.persisted: set[str] = set()
        self.left: dict[str, str] = {}

    async def namespace_connect(self, eio_sid: str, namespace: str | None, data: Any) -> Any:
        namespace = namespace or "/"
        if namespace != "/" or self.manager.sid_from_eio_sid(eio_sid, namespace) is not None:
            # python-socketio refuses it (one namespace, one connection each): no check
            return await super().namespace_connect(eio_sid, namespace, data)
        attempts = self.connect_attempts[eio_sid] = self.connect_attempts.get(eio_sid, 0) + 1
        # Checked before python-socketio registers the socket: once registered, even while
        # its connect handler runs, it is part of every broadcast.
        try:
            admitted = await self.policy.admit(eio_sid, data, attempts)
        except Refused as exc:
            refusal = {"message": "unauthorized", "data": {"reason": exc.reason}}
            await self.send_packet(
                eio_sid, self.packet_class(packet.CONNECT_ERROR, data=refusal, namespace="/")
            )
            return None
        engine_socket = self.eio.sockets.get(eio_sid)
        if engine_socket is None or engine_socket.closed or eio_sid not in self.environ:
            return None  # it left while its credentials were checked
        _admitted.set(admitted)
        if self.recovery is None:
            return await super().namespace_connect(eio_sid, namespace, data)
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
                        await self.policy.release(given_up)
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
            await self.send_packet(
                eio_sid,
                self.packet_class(packet.CONNECT_ERROR, data="Unable to connect", namespace="/"),
            )
            for session in (given_up, replay.session if replay is not None else None):
                if session is not None:
                    await self.policy.release(session)
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
            success = await self.trigger_event("connect", "/", sid, self.environ[eio_sid], auth)
            fail_reason = socketio.exceptions.ConnectionRefusedError().error_args
        except socketio.exceptions.ConnectionRefusedError as exc:
            fail_reason, success = exc.error_args, False
        if success is False:
            await self.send_packet(
                eio_sid, self.packet_class(packet.CONNECT_ERROR, data=fail_reason, namespace="/")
            )
            await self.manager.disconnect(sid, "/", ignore_queue=True)
            self.pids.pop(sid, None)
            if replay is not None:
                await self.policy.recovery_outcome(sid, "refused", replay.session)
            if given_up is not None:
                await self.policy.release(given_up)
            return
        answer = {"sid": sid, "pid": self.pids[sid][0]}
        await self.send_packet(eio_sid, self.packet_class(packet.CONNECT, answer, namespace="/"))
        await self.manager.connect(sid, "/")
        if replay is not None:
            await self.policy.rejoin(sid, replay.session)
        if outcome is not None:
            await self.policy.recovery_outcome(sid, outcome, given_up)

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
        except STORE_ERRORS as exc:
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
        except STORE_ERRORS as exc:
            log.warning("recovery_store_failed", error=repr(exc))
            return False
        self.left[pid] = sid
        return True

    async def engine_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        self.policy.connected(eio_sid, environ)
        return await super().engine_connect(eio_sid, environ)

    async def engine_disconnect(self, eio_sid: str, reason: Any) -> Any:
        self.policy.disconnected(eio_sid)
        self.connect_attempts.pop(eio_sid, None)
        self.forget_attachments(eio_sid)  # attachments python-socketio was given
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
            return await super().engine_disconnect(eio_sid, reason)
        finally:
            if sid is not None:
                self.persisted.discard(sid)
                self.manager.unrecoverable.discard(sid)

    async def engine_message(self, eio_sid: str, data: str | bytes) -> Any:
        if not await self.policy.screen(eio_sid, data):
            return None
        try:
            return await super().engine_message(eio_sid, data)
        except RecursionError:  # arguments nested deeper than a JSON decoder goes
            await self.policy.undecodable(eio_sid, str(data))  # a text packet: JSON
            return None
        except ValueError:  # JSON python-socketio cannot decode, a packet it refuses
            self.policy.invalid(eio_sid)
            return None

    async def event_received(
        self, sid: str, eio_sid: str, data: list[Any], namespace: str, id: int | None
    ) -> Any:
        refusal = None
        if data and not self.policy.rate_allows(sid):
            refusal = "rate_limited"
        elif data and data[0] in RESERVED_EVENTS:
            # Sent by a client, these would run the server's own connect or disconnect
            # handler: a browser could fake its own disconnection.
            refusal = "event_reserved"
        if refusal is not None:
            await self.ack(eio_sid, id, self.policy.refused(sid, data[0], refusal), namespace)
            return None
        _ack_requested.set(id is not None)
        return await super().event_received(sid, eio_sid, data, namespace, id)

    async def ack(
        self, eio_sid: str, id: int | None, answer: dict[str, Any], namespace: str = "/"
    ) -> None:
        """Answer a browser event's ack, if it asked for one, without its handler."""
        if id is not None:
            ack = self.packet_class(packet.ACK, namespace=namespace, id=id, data=[answer])
            await self.send_packet(eio_sid, ack)
