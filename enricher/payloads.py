"""Upstream payloads, parsed once and tolerantly, and the snapshot browsers get.

Everything here is pure. Parsers take whatever the backend sent (a dict from JSON, or
anything else when it drifts) and return small typed records plus a list of warnings,
one per field that was missing or odd and got a default. A payload that cannot be tied
to a room at all raises :class:`Rejected` with a short reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")

MAX_ID_LENGTH = 256
# Names a sidebar must never show: the frontend's own fallback and the backend's default title.
PLACEHOLDER_NAMES = frozenset({"", "unknown", "personal", "null", "undefined", "none"})


class Rejected(ValueError):
    """A payload that cannot be used; ``reason`` is a short label for logs and metrics."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    """A chat message as far as a sidebar cares about it."""

    id: str | None
    room_id: str
    created_at: datetime | None
    created_at_raw: str | None
    content_text: str | None
    content_type: str | None
    user_id: str | None

    def summary(self) -> dict[str, Any]:
        """The ``last_message`` object of ``new_room_complete``."""
        return {
            "id": self.id,
            "content_text": self.content_text,
            "content_type": self.content_type,
            "created_at": self.created_at_raw,
            "user_id": self.user_id,
        }


@dataclass(frozen=True, slots=True)
class Room:
    """A room as ``new_room`` or ``GET /rooms/<id>`` describes it."""

    room_id: str
    phone: str | None = None
    title: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    leads_info: dict[str, Any] | None = None
    unread_count: int | None = None
    message_count: int | None = None
    participants: list[Any] = field(default_factory=list)
    last_message: Message | None = None


@dataclass(frozen=True, slots=True)
class Parsed(Generic[T]):
    """A parsed record and the names of the fields that had to be defaulted."""

    value: T
    warnings: tuple[str, ...] = ()


def room_id_of(value: object) -> str:
    """A room id usable as a key and a URL path segment: a non-empty string (or integer)
    of bounded length, of printable characters."""
    if isinstance(value, bool) or value is None:
        raise Rejected("room_id_missing" if value is None else "room_id_invalid")
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise Rejected("room_id_invalid")
    value = value.strip()
    if not value:
        raise Rejected("room_id_missing")
    if len(value) > MAX_ID_LENGTH:
        raise Rejected("room_id_too_long")
    if not value.isprintable() or any("\ud800" <= c <= "\udfff" for c in value):
        # Control characters or lone surrogates (from a "\ud800" escape): not an id any
        # backend gave out, and not text a URL can carry.
        raise Rejected("room_id_invalid")
    if value in (".", ".."):
        # No URL path can carry these as a segment: "." and ".." are resolved away, and
        # WHATWG URL parsers (Node's, browsers') resolve "%2E" and "%2E%2E" too.
        raise Rejected("room_id_invalid")
    return value


def parse_timestamp(value: object) -> datetime | None:
    """An aware datetime from an ISO 8601 string or epoch seconds/milliseconds, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value):
            return None
        seconds = value / 1000 if abs(value) > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and 0 < len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


class _Fields:
    """Reads fields of one payload, remembering which ones had to be defaulted."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload
        self.warnings: list[str] = []

    def text(self, name: str, *, source: dict[str, Any] | None = None) -> str | None:
        value = (self.payload if source is None else source).get(name)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.warnings.append(name)
            return str(value)
        self.warnings.append(name)
        return None

    def count(self, name: str) -> int | None:
        value = self.payload.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            digits = value.strip()
            if digits.isascii() and digits.isdigit() and len(digits) <= 18:
                value = int(digits)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        self.warnings.append(name)
        return None

    def mapping(self, name: str) -> dict[str, Any] | None:
        value = self.payload.get(name)
        if value is None or isinstance(value, dict):
            return value
        self.warnings.append(name)
        return None

    def timestamp(
        self, name: str, *, source: dict[str, Any] | None = None
    ) -> tuple[datetime | None, str | None]:
        raw = (self.payload if source is None else source).get(name)
        if raw is None:
            return None, None
        parsed = parse_timestamp(raw)
        if parsed is None:
            self.warnings.append(name)
            return None, raw if isinstance(raw, str) else None
        return parsed, raw if isinstance(raw, str) else parsed.isoformat()


def _require_dict(payload: object) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise Rejected("not_an_object")
    return payload


def parse_message(payload: object) -> Parsed[Message]:
    """A ``new_message`` / ``room:new_message`` payload."""
    data = _require_dict(payload)
    room_id = room_id_of(data.get("room_id"))
    fields = _Fields(data)
    message_id = fields.text("id")
    if message_id is not None and not 0 < len(message_id) <= MAX_ID_LENGTH:
        fields.warnings.append("id")
        message_id = None
    created_at, created_at_raw = fields.timestamp("created_at")
    message = Message(
        id=message_id,
        room_id=room_id,
        created_at=created_at,
        created_at_raw=created_at_raw,
        content_text=fields.text("content_text"),
        content_type=fields.text("content_type"),
        user_id=fields.text("user_id"),
    )
    return Parsed(message, tuple(fields.warnings))


def _last_message(fields: _Fields, room_id: str) -> Message | None:
    """The room's latest message, from ``last_message: {...}`` or the flat fields."""
    nested = fields.mapping("last_message")
    flat_time, flat_time_raw = fields.timestamp("last_message_timestamp")
    flat_text = fields.text("last_message_text")
    flat_type = fields.text("last_message_type")
    if nested:
        created_at, created_at_raw = fields.timestamp("created_at", source=nested)
        return Message(
            id=fields.text("id", source=nested),
            room_id=room_id,
            created_at=created_at or flat_time,
            created_at_raw=created_at_raw or flat_time_raw,
            content_text=fields.text("content_text", source=nested) or flat_text,
            content_type=fields.text("content_type", source=nested) or flat_type,
            user_id=fields.text("user_id", source=nested),
        )
    if flat_text is None and flat_time_raw is None:
        return None
    return Message(
        id=None,
        room_id=room_id,
        created_at=flat_time,
        created_at_raw=flat_time_raw,
        content_text=flat_text,
        content_type=flat_type,
        user_id=None,
    )


def parse_room(payload: object) -> Parsed[Room]:
    """A ``new_room`` payload, or the room object of a REST answer."""
    data = _require_dict(payload)
    room_id = room_id_of(data.get("room_id", data.get("id")))
    fields = _Fields(data)
    participants = data.get("participants")
    if participants is None:
        participants = []
    elif not isinstance(participants, list):
        fields.warnings.append("participants")
        participants = []
    room = Room(
        room_id=room_id,
        phone=fields.text("room_phone") or fields.text("phone"),
        title=fields.text("room_title") or fields.text("title"),
        created_at=fields.text("room_created_at") or fields.text("created_at"),
        updated_at=fields.text("room_updated_at") or fields.text("updated_at"),
        leads_info=fields.mapping("leads_info"),
        unread_count=fields.count("unread_count"),
        message_count=fields.count("message_count"),
        participants=participants,
        last_message=_last_message(fields, room_id),
    )
    return Parsed(room, tuple(fields.warnings))


def parse_rest_room(body: object, room_id: str) -> Parsed[Room]:
    """The body of ``GET /rooms/<room_id>``: ``{"data": {...room...}}`` (or the bare room)."""
    data = _require_dict(body)
    inner = data.get("data", data)
    if not isinstance(inner, dict):
        raise Rejected("data_not_an_object")
    if inner.get("room_id", inner.get("id")) is None:
        inner = {**inner, "room_id": room_id}
    parsed = parse_room(inner)
    if parsed.value.room_id != room_id:
        raise Rejected("room_id_mismatch")
    return parsed


def _real_name(value: object) -> str | None:
    if isinstance(value, str) and value.strip().lower() not in PLACEHOLDER_NAMES:
        return value
    return None


def display_name(room: Room) -> str:
    """The name a sidebar shows: the lead's, else a real title, else ``Customer <phone>``."""
    lead = room.leads_info or {}
    name = _real_name(lead.get("name")) or _real_name(room.title)
    if name:
        return name
    phone = room.phone or _real_name(lead.get("phone")) or room.room_id
    return f"Customer {phone}"


def build_snapshot(
    room: Room,
    last: Message | None,
    *,
    unread_count: int,
    message_count: int,
    partial_reason: str | None,
) -> dict[str, Any]:
    """The ``new_room_complete`` payload: the seed's schema plus the flat last-message fields.

    The seed's display chain ``leads_info?.name || room_title || room_phone`` gives
    :func:`display_name` on it, whatever the backend sent.
    """
    name = display_name(room)
    leads_info = dict(room.leads_info) if room.leads_info is not None else None
    if leads_info is not None:
        leads_info["name"] = name
        title = room.title
    else:
        title = name
    snapshot: dict[str, Any] = {
        "room_id": room.room_id,
        "room_phone": room.phone,
        "room_title": title,
        "room_created_at": room.created_at,
        "room_updated_at": room.updated_at,
        "leads_info": leads_info,
        "last_message": last.summary() if last else None,
        "last_message_text": last.content_text if last else None,
        "last_message_timestamp": last.created_at_raw if last else None,
        "last_message_type": last.content_type if last else None,
        "unread_count": unread_count,
        "message_count": message_count,
        "participants": list(room.participants),
        "enrichment": "partial" if partial_reason else "complete",
    }
    if partial_reason:
        snapshot["enrichment_reason"] = partial_reason
    return snapshot
