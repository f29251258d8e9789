"""Runs the join: feeds it events, REST answers and time, and carries out its actions.

Emits go out one after the other, in the order the join produced them, so a snapshot
always reaches browsers before the deltas that follow it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from .backend import FetchRoom
from .background import Background
from .join import Join
from .join_types import Action, Emit, Fetch, Note, NoteKind
from .jsonwire import event_packet
from .metrics import Metrics, event_label

log = structlog.get_logger("enricher.join")

# Log level of each kind of note; "snapshot_sent" is raised to warning when partial.
_LEVELS = {
    NoteKind.SNAPSHOT_SENT: "info",
    NoteKind.ROOM_HELD: "debug",
    NoteKind.DUPLICATE_SUPPRESSED: "info",
    NoteKind.PAYLOAD_REJECTED: "warning",
    NoteKind.PAYLOAD_WARNING: "warning",
    NoteKind.REST_FAILED: "warning",
    NoteKind.REST_ANSWER_UNUSED: "info",
    NoteKind.UPSTREAM_OUTAGE: "info",
    NoteKind.ROOM_CHECK: "debug",
    NoteKind.ROOM_RECOVERED: "info",
    NoteKind.ROOM_CHECKED: "debug",  # raised to warning when REST could not tell
}


class JoinDriver:
    """The I/O around a :class:`Join`."""

    def __init__(
        self,
        join: Join,
        fetch_room: FetchRoom,
        emit: Callable[[Emit], Awaitable[None]] | None,
        metrics: Metrics,
        *,
        send: Callable[[Emit], None] | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Emits go out through ``emit``, one after the other, from :meth:`run`; or, with
        ``send``, at once, in the caller's turn (one browser's own stream: its log lines then
        carry ``fields``, and what is news once per room, not per browser, is logged at debug
        level)."""
        self._join = join
        self._send = send
        self._fields = fields
        self._fetch_room = fetch_room
        self._emit = emit
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        self._emits: asyncio.Queue[Emit] = asyncio.Queue()
        self._tasks = Background(self._loop)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    @property
    def pending_rooms(self) -> dict[str, Any]:
        """The rooms its join holds now, by id."""
        return self._join.pending_rooms

    def upstream_event(self, event: str, args: tuple[Any, ...]) -> None:
        """An event from the backend, in arrival order."""
        self._metrics.received(event)
        try:
            actions = self._join.upstream_event(event, args, self._loop.time())
        except Exception:
            # A bug must not cost the event: it goes out as it came.
            log.exception("join_failed", upstream_event=event)
            actions = [Emit(event, args)]
        self._carry_out(actions)

    def undecodable(self, packet: str) -> None:
        """A backend packet too deeply nested to decode: forwarded as it came, counted."""
        found = event_packet(packet)
        if found is None:  # not an event of namespace "/": nothing a browser would get
            fields = {"upstream_event": "other", "reason": "undecodable", "length": len(packet)}
            self._note(Note(NoteKind.PAYLOAD_REJECTED, fields))
            return
        event, _, raw = found
        self._metrics.received(event)
        fields = {"upstream_event": event, "reason": "too_deep", "forwarded": "as_it_came"}
        self._note(Note(NoteKind.PAYLOAD_REJECTED, fields))
        self._put(Emit(event, (), raw=raw))

    def upstream_lost(self, last_heard: datetime) -> None:
        """The backend connection went down; ``last_heard``: its last packet's arrival."""
        try:
            actions = self._join.upstream_lost(last_heard, self._loop.time())
        except Exception:  # a bug must not stop the reconnection
            log.exception("join_failed", upstream_event="disconnect")
            actions = []
        self._carry_out(actions)

    def upstream_restored(self) -> None:
        """The backend connection is up again, from now on."""
        try:
            actions = self._join.upstream_restored(datetime.now(UTC), self._loop.time())
        except Exception:
            log.exception("join_failed", upstream_event="connect")
            actions = []
        self._carry_out(actions)

    def announce(self, event: str, payload: dict[str, Any]) -> None:
        """Send an event of enricher's own to every browser, in order with the join's."""
        self._put(Emit(event, (payload,)))

    def _put(self, action: Emit) -> None:
        if self._send is not None:
            self._send(action)
        else:
            self._emits.put_nowait(action)

    async def run(self) -> None:
        """Send the join's emits, in order, until cancelled."""
        while True:
            action = await self._emits.get()
            try:
                assert self._emit is not None
                await self._emit(action)
            except Exception:
                log.exception("emit_failed", emitted_event=action.event)
            finally:
                self._emits.task_done()

    async def flush(self, reason: str) -> None:
        """Send every held room now and wait until all emits are out."""
        self._carry_out(self._join.flush(self._loop.time(), reason))
        await self._emits.join()

    def stop(self) -> None:
        """Nothing more from this join (its browser left): its timer and its REST
        requests under way are dropped."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        self._tasks.cancel()

    async def drain(self) -> None:
        """Wait until the emits decided so far are out (held rooms stay held)."""
        await self._emits.join()

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Emit):
                self._put(action)
            elif isinstance(action, Fetch):
                self._tasks.start(self._fetch(action.room_id))
            else:
                self._note(action)
        self._arm_timer()

    async def _fetch(self, room_id: str) -> None:
        answer = await self._fetch_room(room_id, lambda: room_id in self._join.pending_rooms)
        self._carry_out(self._join.rest_answer(room_id, answer, self._loop.time()))

    def _arm_timer(self) -> None:
        wakeup = self._join.next_wakeup()
        if wakeup is None or (self._timer_at is not None and self._timer_at <= wakeup):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = wakeup
        self._timer = self._loop.call_at(wakeup, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        try:
            actions = self._join.tick(self._loop.time())
        except Exception:
            log.exception("join_tick_failed")
            actions = []
        self._carry_out(actions)

    def _note(self, note: Note) -> None:
        fields = note.fields
        level = _LEVELS.get(note.kind, "info")
        metrics = self._metrics
        if note.kind == NoteKind.SNAPSHOT_SENT:
            metrics.snapshot_sent(fields["enrichment"], fields["reason"], fields["held_seconds"])
            if fields["enrichment"] != "complete":
                level = "warning"
        elif note.kind == NoteKind.DUPLICATE_SUPPRESSED:
            metrics.duplicates.labels(event_label(fields["upstream_event"])).inc()
        elif note.kind == NoteKind.PAYLOAD_REJECTED:
            metrics.payload_rejected(fields["upstream_event"], fields["reason"])
        elif note.kind == NoteKind.PAYLOAD_WARNING:
            metrics.warnings.labels(event_label(fields["upstream_event"])).inc()
        elif note.kind == NoteKind.ROOM_RECOVERED:
            metrics.room_checks.labels("recovered").inc()
        elif note.kind == NoteKind.ROOM_CHECKED:
            metrics.room_checks.labels(fields["outcome"]).inc()
            if fields["outcome"] in ("rest_failed", "capacity"):
                level = "warning"
        if self._fields is not None:
            fields = {**fields, **self._fields}
            if level == "info":
                level = "debug"
        getattr(log, level)(note.kind, **fields)
