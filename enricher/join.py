"""The room join: a pure state machine from upstream events to downstream emits.

It never touches a socket, a clock or a loop. Callers feed it upstream events, REST
answers and the current time (``now``, monotonic seconds); each call returns the list
of things to do, in order: :class:`Emit` to browsers, :class:`Fetch` a room from REST,
and :class:`Note` something that happened (one log line and one metric each).

After the backend connection was lost and came back, a ``new_message`` of a room the join
has never seen may belong to a room whose ``new_room`` was emitted while the proxy was
away. The join then asks REST about the room: created during the outage (between the last
moment the backend was heard from before the loss and the reconnection, widened by
``clock_skew`` on both sides), the room is recovered and gets its snapshot like any other;
created before, it is an old room, remembered as checked and never asked about again.

The rule it keeps (docs/contract.md): a ``new_room_complete`` is a snapshot of the room as of
the moment it is sent, and every ``new_message`` sent after it is a delta on top of it.
So messages forwarded before the snapshot are counted in it, a message the snapshot
already counted (because REST showed it first) is not delivered again, and each message
id reaches browsers at most once per event name.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from .expiring import Expiring
from .join_snapshot import RestView, SnapshotSent, compose, known, latest, why_partial
from .join_types import (
    NEW_MESSAGE,
    NEW_ROOM,
    ROOM_MESSAGE,
    SNAPSHOT,
    Action,
    EarlyMessages,
    Emit,
    Fetch,
    JoinLimits,
    NewRoomMode,
    Note,
    NoteKind,
    Parsers,
    PendingRoom,
    RestFailure,
    merge_rooms,
)
from .outages import Outages, iso
from .payloads import Message, Parsed, Rejected, Room, build_snapshot


class Join:
    """Holds new rooms until they are known, then emits one snapshot per room."""

    def __init__(
        self,
        *,
        limits: JoinLimits | None = None,
        new_room_mode: NewRoomMode = NewRoomMode.ENRICHED,
        jitter: Callable[[], float] = lambda: 1.0,
        parsers: Parsers | None = None,
    ) -> None:
        """``jitter()`` returns a number in [0, 1]: the share of the second half of each
        retry delay that is waited (``random.random`` spreads retries; the default, none).
        ``parsers``: how payloads are parsed (the same results for the same payload: joins
        of many browsers' streams share them)."""
        self._parsers = parsers or Parsers()
        self.limits = limits = limits or JoinLimits()
        self.new_room_mode = new_room_mode
        self._jitter = jitter
        self._now = 0.0
        self.pending_rooms: dict[str, PendingRoom] = {}
        self.snapshots_sent: Expiring[str, SnapshotSent] = Expiring(
            limits.max_known_rooms, limits.known_room_ttl, self._clock
        )
        # Messages of rooms without a snapshot, with their arrival times (see _remember_early).
        self.early_messages: Expiring[str, EarlyMessages] = Expiring(
            limits.max_known_rooms, limits.early_message_ttl, self._clock
        )
        self.message_ids: dict[str, Expiring[str, bool]] = {
            event: Expiring(limits.max_message_ids, limits.message_id_ttl, self._clock)
            for event in (NEW_MESSAGE, ROOM_MESSAGE)
        }
        self._timers: list[tuple[float, str]] = []
        self.outages = Outages(limits.max_outages, limits.known_room_ttl, limits.clock_skew)
        # Rooms REST showed to be older than every outage (or undated): never asked again.
        self.rooms_checked: Expiring[str, str] = Expiring(
            limits.max_known_rooms, limits.known_room_ttl, self._clock
        )

    def _clock(self) -> float:
        return self._now

    # -- inputs -------------------------------------------------------------------------

    def upstream_event(self, event: str, args: tuple[Any, ...], now: float) -> list[Action]:
        """An event from the backend; anything the join does not know passes through."""
        self._now = now
        payload = args[0] if args else None
        if event == NEW_ROOM:
            return self._new_room(args, payload, now)
        if event in (NEW_MESSAGE, ROOM_MESSAGE):
            return self._message(event, args, payload)
        return [Emit(event, args)]

    def upstream_lost(self, last_heard: datetime, now: float) -> list[Action]:
        """The backend connection is down; ``last_heard`` is the wall-clock moment the
        last packet (event or ping) came from the backend before the loss."""
        self._now = now
        self.outages.lost(last_heard)
        return []

    def upstream_restored(self, at: datetime, now: float) -> list[Action]:
        """The backend connection is up again since ``at`` (wall clock)."""
        self._now = now
        outage = self.outages.restored(at, now)
        if outage is None:
            return []  # the first connection: nothing was missed
        fields = {"lost_after": iso(outage.lost_after), "restored_at": iso(at)}
        return [Note(NoteKind.UPSTREAM_OUTAGE, fields)]

    def rest_answer(
        self, room_id: str, answer: Parsed[Room] | RestFailure, now: float
    ) -> list[Action]:
        """The result of a :class:`Fetch`."""
        self._now = now
        pending = self.pending_rooms.get(room_id)
        if pending is None:
            return [Note(NoteKind.REST_ANSWER_UNUSED, {"room_id": room_id})]
        pending.fetch_in_flight = False
        actions: list[Action] = []
        if isinstance(answer, RestFailure):
            pending.rest_failure = answer.reason
            actions.append(
                Note(NoteKind.REST_FAILED, {"room_id": room_id, "reason": answer.reason})
            )
            if pending.checking and answer.reason == "rest_not_found":
                # REST does not know the room (404; a 401 or 403 says nothing of the room):
                # nothing to recover, no point asking again.
                actions.extend(self._checked(room_id, pending, "not_found", None))
                return actions
            self._schedule_refetch(pending, now)
            return actions
        if answer.warnings:
            actions.append(
                Note(
                    NoteKind.PAYLOAD_WARNING,
                    {"upstream_event": "rest_room", "room_id": room_id, "fields": answer.warnings},
                )
            )
        if pending.checking:
            outcome = self.outages.dates(answer.value.created_at)
            if outcome != "recovered":
                actions.extend(self._checked(room_id, pending, outcome, answer.value.created_at))
                return actions
            pending.checking, pending.recovered = False, True
            actions.append(
                Note(
                    NoteKind.ROOM_RECOVERED,
                    {
                        "room_id": room_id,
                        "room_created_at": answer.value.created_at,
                        "messages_forwarded": len(pending.forwarded),
                    },
                )
            )
        pending.rest_room = answer.value
        pending.rest_failure = None
        if answer.value.last_message is None and not pending.forwarded:
            # REST answered before the first message was saved: ask again in case its
            # event never comes.
            self._schedule_refetch(pending, now)
        actions.extend(self._send_if_known(room_id, pending, now))
        return actions

    def tick(self, now: float) -> list[Action]:
        """Time passed: refetch what is due, send what reached its deadline."""
        self._now = now
        actions: list[Action] = []
        while self._timers and self._timers[0][0] <= now:
            _, room_id = heapq.heappop(self._timers)
            pending = self.pending_rooms.get(room_id)
            if pending is None:
                continue
            if pending.deadline <= now and pending.checking:
                # REST never told: the room may be new or old, so it gets no snapshot; its
                # next message asks again.
                actions.extend(self._checked(room_id, pending, "rest_failed", None))
            elif pending.deadline <= now:
                reason = None if known(pending) else why_partial(pending)
                actions.extend(self._send(room_id, pending, now, reason))
            elif pending.grace_until is not None and pending.grace_until <= now:
                actions.extend(self._send_if_known(room_id, pending, now))
            elif (
                pending.next_fetch_at is not None
                and pending.next_fetch_at <= now
                and not pending.fetch_in_flight
            ):
                pending.next_fetch_at = None
                actions.append(self._fetch(pending, room_id))
        return actions

    def flush(self, now: float, reason: str) -> list[Action]:
        """Send every held room now, complete or partial (at shutdown)."""
        self._now = now
        actions: list[Action] = []
        for room_id, pending in list(self.pending_rooms.items()):
            if pending.checking:
                actions.extend(self._checked(room_id, pending, "shutdown", None))
                continue
            actions.extend(self._send(room_id, pending, now, None if known(pending) else reason))
        return actions

    def next_wakeup(self) -> float | None:
        """When :meth:`tick` has something to do next (it may find nothing)."""
        return self._timers[0][0] if self._timers else None

    # -- events -------------------------------------------------------------------------

    def _new_room(self, args: tuple[Any, ...], payload: object, now: float) -> list[Action]:
        try:
            parsed = self._parsers.room(payload)
        except Rejected as exc:
            # No room to hold: the raw payload still reaches browsers, degraded.
            return [
                Note(NoteKind.PAYLOAD_REJECTED, {"upstream_event": NEW_ROOM, "reason": exc.reason}),
                Emit(NEW_ROOM, args),
            ]
        room = parsed.value
        room_id = room.room_id
        actions: list[Action] = []
        if parsed.warnings:
            actions.append(
                Note(
                    NoteKind.PAYLOAD_WARNING,
                    {"upstream_event": NEW_ROOM, "room_id": room_id, "fields": parsed.warnings},
                )
            )
        if room_id in self.snapshots_sent:
            actions.append(
                Note(
                    NoteKind.DUPLICATE_SUPPRESSED, {"upstream_event": NEW_ROOM, "room_id": room_id}
                )
            )
            return actions
        pending = self.pending_rooms.get(room_id)
        if pending is not None and pending.checking:
            # The new_room of a room being checked came after all: it is new, held as usual.
            pending.checking = False
            pending.room = merge_rooms(pending.room, replace(room, last_message=None))
            if self.new_room_mode is NewRoomMode.RAW:
                actions.append(Emit(NEW_ROOM, args))
            actions.append(
                Note(
                    NoteKind.ROOM_HELD,
                    {"room_id": room_id, "early_messages": len(pending.forwarded)},
                )
            )
            actions.extend(self._send_if_known(room_id, pending, now))
            return actions
        if pending is not None:
            pending.room = merge_rooms(pending.room, replace(room, last_message=None))
            actions.append(
                Note(
                    NoteKind.DUPLICATE_SUPPRESSED, {"upstream_event": NEW_ROOM, "room_id": room_id}
                )
            )
            return actions
        if len(self.pending_rooms) >= self.limits.max_pending_rooms:
            oldest_id, oldest = next(iter(self.pending_rooms.items()))
            if oldest.checking:
                actions.extend(self._checked(oldest_id, oldest, "capacity", None))
            else:
                actions.extend(self._send(oldest_id, oldest, now, "capacity"))
        if self.new_room_mode is NewRoomMode.RAW:
            actions.append(Emit(NEW_ROOM, args))
        pending = PendingRoom(
            room=room,
            seen_at=now,
            deadline=now + self.limits.hold_timeout,
            forwarded=self._early(room_id, now),
        )
        self.pending_rooms[room_id] = pending
        self._timer(pending.deadline, room_id)
        actions.append(
            Note(NoteKind.ROOM_HELD, {"room_id": room_id, "early_messages": len(pending.forwarded)})
        )
        actions.append(self._fetch(pending, room_id))
        return actions

    def _message(self, event: str, args: tuple[Any, ...], payload: object) -> list[Action]:
        try:
            parsed = self._parsers.message(payload)
        except Rejected as exc:
            # Cannot be tied to a room: forwarded unchanged to every browser.
            return [
                Note(NoteKind.PAYLOAD_REJECTED, {"upstream_event": event, "reason": exc.reason}),
                Emit(event, args),
            ]
        message = parsed.value
        actions: list[Action] = []
        if parsed.warnings:
            actions.append(
                Note(
                    NoteKind.PAYLOAD_WARNING,
                    {
                        "upstream_event": event,
                        "room_id": message.room_id,
                        "fields": parsed.warnings,
                    },
                )
            )
        seen = self.message_ids[event]
        if message.id is not None:
            if message.id in seen:
                actions.append(
                    Note(
                        NoteKind.DUPLICATE_SUPPRESSED,
                        {"upstream_event": event, "room_id": message.room_id},
                    )
                )
                return actions
            seen[message.id] = True
        if event == ROOM_MESSAGE:
            actions.append(Emit(event, args, room=f"room:{message.room_id}"))
            return actions
        sent = self.snapshots_sent.get(message.room_id)
        if sent is not None and sent.counts(message):
            actions.append(
                Note(
                    NoteKind.DUPLICATE_SUPPRESSED,
                    {
                        "upstream_event": event,
                        "room_id": message.room_id,
                        "reason": "counted_in_snapshot",
                    },
                )
            )
            return actions
        actions.append(Emit(event, args))
        pending = self.pending_rooms.get(message.room_id)
        if pending is not None:
            pending.forwarded.append(message)
            actions.extend(self._send_if_known(message.room_id, pending, self._now))
        elif sent is None and event == NEW_MESSAGE and self._may_be_lost(message.room_id):
            actions.extend(self._check(message))
        elif sent is None:
            self._remember_early(message)
        return actions

    # -- rooms whose new_room may have been lost ----------------------------------------

    def _may_be_lost(self, room_id: str) -> bool:
        """Whether a room never seen may be one created while the connection was down."""
        return (
            self.outages.any(self._now)
            and room_id not in self.rooms_checked
            and len(self.pending_rooms) < self.limits.max_pending_rooms
        )

    def _check(self, message: Message) -> list[Action]:
        """Hold a room never seen, with the messages already forwarded, and ask REST."""
        room_id, now = message.room_id, self._now
        pending = PendingRoom(
            room=Room(room_id=room_id),
            seen_at=now,
            deadline=now + self.limits.hold_timeout,
            forwarded=[*self._early(room_id, now), message],
            checking=True,
        )
        self.pending_rooms[room_id] = pending
        heapq.heappush(self._timers, (pending.deadline, room_id))
        return [Note(NoteKind.ROOM_CHECK, {"room_id": room_id}), self._fetch(pending, room_id)]

    def _checked(
        self, room_id: str, pending: PendingRoom, outcome: str, created_at: str | None
    ) -> list[Action]:
        """A checked room that gets no snapshot: its messages are remembered as early
        ones again (its new_room may still come), and unless REST could not tell, it is
        not asked about again."""
        del self.pending_rooms[room_id]
        for message in pending.forwarded:
            self._remember_early(message)
        if outcome not in ("rest_failed", "capacity", "shutdown"):
            self.rooms_checked[room_id] = outcome
        fields = {"room_id": room_id, "outcome": outcome, "room_created_at": created_at}
        return [Note(NoteKind.ROOM_CHECKED, fields)]

    def _remember_early(self, message: Message) -> None:
        """Remember a forwarded message of a room without a snapshot, for
        ``early_message_ttl``: perhaps its ``new_room`` is still on the way. Most such rooms
        are simply older than the proxy, so each keeps only its latest messages."""
        early = self.early_messages.get(message.room_id)
        if early is None:
            early = EarlyMessages(self.limits.max_early_messages_per_room)
        early.add(self._now, message, self._now - self.limits.early_message_ttl)
        self.early_messages[message.room_id] = early

    def _early(self, room_id: str, now: float) -> list[Message]:
        """The early messages of a room that has just arrived, younger than the TTL."""
        early = self.early_messages.pop(room_id, None)
        return early.since(now - self.limits.early_message_ttl) if early is not None else []

    # -- the snapshot -------------------------------------------------------------------

    def _timer(self, at: float, room_id: str) -> None:
        """Wake up at ``at`` for ``room_id``. A room sent before its timers are due leaves
        them behind: once they outnumber the held rooms' own (a deadline, a retry and a
        grace each) by far, they are dropped, so a burst of rooms cannot grow the heap
        beyond ``max_pending_rooms``."""
        heapq.heappush(self._timers, (at, room_id))
        if len(self._timers) > 4 * len(self.pending_rooms) + 1024:
            self._timers = [t for t in self._timers if t[1] in self.pending_rooms]
            heapq.heapify(self._timers)

    def _fetch(self, pending: PendingRoom, room_id: str) -> Fetch:
        pending.fetch_in_flight = True
        pending.fetch_attempts += 1
        return Fetch(room_id)

    def _schedule_refetch(self, pending: PendingRoom, now: float) -> None:
        # Exponential backoff with "equal jitter": half the delay, plus up to the other half.
        backoff = self.limits.retry_delay * 2 ** (pending.fetch_attempts - 1)
        delay = backoff / 2 + backoff / 2 * min(1.0, max(0.0, self._jitter()))
        if now + delay < pending.deadline:
            pending.next_fetch_at = now + delay
            self._timer(now + delay, pending.room.room_id)

    def _send_if_known(self, room_id: str, pending: PendingRoom, now: float) -> list[Action]:
        """Send the snapshot once the room is known (see :func:`.join_snapshot.known`)."""
        if not known(pending):
            return []
        rest_last = pending.rest_room.last_message if pending.rest_room else None
        if rest_last is not None and rest_last.id is None:
            view = RestView.of(pending.rest_room)
            unseen = [m for m in pending.forwarded if not view.shows(m)]
            if not view.last_arrived and latest(rest_last, unseen) is rest_last:
                # A flat REST answer names no message id: give the message's own event a
                # moment to arrive, so that the snapshot carries its id and sender.
                if pending.grace_until is None:
                    pending.grace_until = min(now + self.limits.event_grace, pending.deadline)
                    self._timer(pending.grace_until, room_id)
                if now < pending.grace_until:
                    return []
        return self._send(room_id, pending, now, None)

    def _send(
        self, room_id: str, pending: PendingRoom, now: float, partial_reason: str | None
    ) -> list[Action]:
        del self.pending_rooms[room_id]
        rest = pending.rest_room
        composed = compose(pending)
        snapshot = self._parsers.snapshot(
            (
                pending.room,
                rest,
                composed.last,
                composed.unread_count,
                composed.message_count,
                partial_reason,
            ),
            lambda: build_snapshot(
                merge_rooms(pending.room, rest),
                composed.last,
                unread_count=composed.unread_count,
                message_count=composed.message_count,
                partial_reason=partial_reason,
            ),
        )
        self.snapshots_sent[room_id] = composed.sent
        actions: list[Action] = [
            Note(
                NoteKind.SNAPSHOT_SENT,
                {
                    "room_id": room_id,
                    "enrichment": snapshot["enrichment"],
                    "reason": partial_reason,
                    "last_message_from": composed.source,
                    "held_seconds": round(now - pending.seen_at, 6),
                },
            ),
            Emit(SNAPSHOT, (snapshot,)),
        ]
        if self.new_room_mode is NewRoomMode.ENRICHED or (
            self.new_room_mode is NewRoomMode.RAW and pending.recovered
        ):
            # A recovered room's new_room never came: in "raw" mode it is the snapshot.
            actions.append(Emit(NEW_ROOM, (snapshot,)))
        return actions

    def sizes(self) -> dict[str, int]:
        """How many entries each bounded table holds now."""
        return {
            "pending_rooms": len(self.pending_rooms),
            "snapshots_sent": len(self.snapshots_sent),
            "early_messages": len(self.early_messages),
            "message_ids": sum(len(ids) for ids in self.message_ids.values()),
            "timers": len(self._timers),
            "rooms_checked": len(self.rooms_checked),
        }
