"""The join's vocabulary: what it is given (the event names it takes, its limits), what it
answers with (:class:`Emit`, :class:`Fetch`, :class:`Note`), and the records it keeps of
each room (see :mod:`.join`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .payloads import (
    Message,
    Parsed,
    Room,
    parse_message,
    parse_room,
)

NEW_ROOM = "new_room"
NEW_MESSAGE = "new_message"
ROOM_MESSAGE = "room:new_message"
SNAPSHOT = "new_room_complete"


class NewRoomMode(StrEnum):
    """What browsers get as ``new_room``."""

    ENRICHED = "enriched"  # the complete snapshot, sent together with new_room_complete
    RAW = "raw"  # the upstream payload, at once
    DROP = "drop"  # nothing


@dataclass(frozen=True, slots=True)
class Emit:
    """Send ``event`` with ``args`` to every browser, or to the browsers in ``room``; with
    ``raw``, that Socket.IO packet text as it came instead (a payload too deep to decode)."""

    event: str
    args: tuple[Any, ...]
    room: str | None = None
    raw: str | None = None


@dataclass(frozen=True, slots=True)
class Fetch:
    """Start ``GET /rooms/<room_id>``; answer with :meth:`Join.rest_answer`."""

    room_id: str


class NoteKind(StrEnum):
    """What a :class:`Note` tells of (its log line's event name)."""

    SNAPSHOT_SENT = "snapshot_sent"
    ROOM_HELD = "room_held"
    DUPLICATE_SUPPRESSED = "duplicate_suppressed"
    PAYLOAD_REJECTED = "payload_rejected"
    PAYLOAD_WARNING = "payload_warning"
    REST_FAILED = "rest_failed"
    REST_ANSWER_UNUSED = "rest_answer_unused"
    UPSTREAM_OUTAGE = "upstream_outage"
    ROOM_CHECK = "room_check"
    ROOM_RECOVERED = "room_recovered"
    ROOM_CHECKED = "room_checked"


@dataclass(frozen=True, slots=True)
class Note:
    """Something that happened: ``kind`` names it, ``fields`` say the rest (its log
    line's fields)."""

    kind: NoteKind
    fields: dict[str, Any]


Action = Emit | Fetch | Note


@dataclass(frozen=True, slots=True)
class RestFailure:
    """A REST request that gave no usable room; ``reason`` is a short label."""

    reason: str


@dataclass(frozen=True, slots=True)
class JoinLimits:
    """Timing and size bounds of the join."""

    hold_timeout: float = 3.0
    retry_delay: float = 0.25
    max_pending_rooms: int = 10_000
    max_known_rooms: int = 200_000
    known_room_ttl: float = 3600.0
    max_message_ids: int = 200_000
    message_id_ttl: float = 600.0
    early_message_ttl: float = 30.0
    max_early_messages_per_room: int = 256
    event_grace: float = 0.2
    clock_skew: float = 2.0
    max_outages: int = 64


@dataclass(slots=True)
class PendingRoom:
    """A new room held until its snapshot is sent."""

    room: Room
    seen_at: float
    deadline: float
    rest_room: Room | None = None
    rest_failure: str | None = None
    fetch_in_flight: bool = False
    fetch_attempts: int = 0
    next_fetch_at: float | None = None
    grace_until: float | None = None
    forwarded: list[Message] = field(default_factory=list)
    # Held only until REST says whether it is a room whose new_room was lost in an outage.
    checking: bool = False
    # New, but its new_room never came: in "raw" mode the snapshot goes out as new_room too.
    recovered: bool = False


def merge_rooms(first: Room, better: Room | None) -> Room:
    """``better``'s fields where it has them, ``first``'s elsewhere."""
    if better is None:
        return first
    return Room(
        room_id=first.room_id,
        phone=better.phone or first.phone,
        title=better.title or first.title,
        created_at=better.created_at or first.created_at,
        updated_at=better.updated_at or first.updated_at,
        leads_info=better.leads_info if better.leads_info is not None else first.leads_info,
        unread_count=better.unread_count,
        message_count=better.message_count,
        participants=better.participants or first.participants,
        last_message=better.last_message,
    )


@dataclass(frozen=True, slots=True)
class Parsers:
    """How the join parses ``new_room`` and message payloads."""

    room: Callable[[object], Parsed[Room]] = parse_room
    message: Callable[[object], Parsed[Message]] = parse_message
    # A snapshot from what it is made of (``key``: those objects and numbers); joins of
    # many browsers' streams that got the same records build it once.
    snapshot: Callable[[tuple[Any, ...], Callable[[], dict[str, Any]]], dict[str, Any]] = (
        lambda key, build: build()
    )


class EarlyMessages:
    """The latest messages of one room without a snapshot, with their arrival times (two
    deques, not one of pairs: a pair holding a message is one more object for Python's
    garbage collector to walk, and a join per browser holds many)."""

    __slots__ = ("messages", "times")

    def __init__(self, maxlen: int) -> None:
        self.times: deque[float] = deque(maxlen=maxlen)
        self.messages: deque[Message] = deque(maxlen=maxlen)

    def add(self, at: float, message: Message, oldest: float) -> None:
        """Keep ``message``, forgetting those that arrived at ``oldest`` or before."""
        times, messages = self.times, self.messages
        while times and times[0] <= oldest:
            times.popleft()
            messages.popleft()
        times.append(at)
        messages.append(message)

    def since(self, oldest: float) -> list[Message]:
        """The messages that arrived after ``oldest``, in order."""
        return [m for at, m in zip(self.times, self.messages, strict=True) if at > oldest]

    def __len__(self) -> int:
        return len(self.messages)
