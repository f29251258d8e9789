"""The simulated backend's database: rooms and messages, and the payloads built from them.

Pure: no clock, no I/O. Payloads follow docs/contract.md: ``new_room`` minimal, messages in
full, ``GET /rooms/<id>`` with the full lead and the last message flat, nested or both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

RestShape = Literal["flat", "nested", "both"]
RestChaos = Literal["slow", "flaky"]
LAST_MESSAGE_KEYS = ("id", "content_text", "content_type", "created_at", "user_id")


@dataclass
class StoredRoom:
    """A room as the backend keeps it. ``lead`` is the full lead REST answers with."""

    room_id: str
    phone: str
    lead: dict[str, Any]
    created_at: str
    rest_shape: RestShape = "flat"
    rest_chaos: RestChaos | None = None
    rest_delay: float = 0.0  # seconds the first REST answer takes when ``rest_chaos`` is slow
    seq: int = 0  # set by the store: the order rooms were created in
    messages: list[dict[str, Any]] = field(default_factory=list)
    rest_requests: int = 0


@dataclass(frozen=True)
class RestAnswer:
    """What ``GET /rooms/<id>`` answers: after ``delay`` seconds, ``status`` with ``body``."""

    status: int
    body: dict[str, Any]
    delay: float = 0.0


def new_room_payload(room: StoredRoom, lead_name: str | None) -> dict[str, Any]:
    """What ``ensureRoom()`` emits: minimal, with ``leads_info`` null when ``lead_name`` is."""
    return {
        "room_id": room.room_id,
        "room_phone": room.phone,
        "room_title": "Personal",
        "room_created_at": room.created_at,
        "room_updated_at": room.created_at,
        "leads_info": None
        if lead_name is None
        else {"id": room.lead["id"], "phone": room.phone, "name": lead_name},
        "unread_count": 0,
        "last_message": None,
        "participants": [],
    }


def message_payload(
    message_id: str, room_id: str, text: str, user_id: str | None, created_at: str
) -> dict[str, Any]:
    """A saved message, as ``new_message`` and ``room:new_message`` carry it."""
    return {
        "id": message_id,
        "room_id": room_id,
        "user_id": user_id,
        "content_type": "text",
        "content_text": text,
        "wa_message_id": f"wamid.{message_id.replace('-', '')[:24]}",
        "status": "sent",
        "reply_to_wa_message_id": None,
        "media_type": None,
        "gcs_url": None,
        "mime_type": None,
        "metadata": {},
        "created_at": created_at,
        "updated_at": created_at,
    }


class Store:
    """Rooms by id, each with its messages in the order they were saved."""

    def __init__(self) -> None:
        self.rooms: dict[str, StoredRoom] = {}

    def add_room(self, room: StoredRoom) -> None:
        room.seq = len(self.rooms) + 1
        self.rooms[room.room_id] = room

    def save(self, message: dict[str, Any]) -> None:
        self.rooms[message["room_id"]].messages.append(message)

    def messages(self, room_id: str) -> list[dict[str, Any]]:
        """``GET /messages?room_id=``: the room's messages, oldest first (none if unknown)."""
        room = self.rooms.get(room_id)
        return list(room.messages) if room else []

    def listing(self) -> dict[str, Any]:
        """``GET /rooms`` (the demo's own): every room's id, creation order and version.

        ``version`` changes whenever ``GET /rooms/<id>`` would answer differently, so the
        page asks again only for the rooms that changed.
        """
        rooms = [
            {"room_id": r.room_id, "seq": r.seq, "version": len(r.messages)}
            for r in self.rooms.values()
        ]
        return {"data": rooms, "last_seq": len(self.rooms)}

    def answer(self, room_id: str) -> RestAnswer:
        """``GET /rooms/<id>``: the room now, or a transient failure when its chaos says so.

        A room's first request is the one the chaos affects: slow, or a 500; later ones are
        answered at once, so a client that retries gets the room.
        """
        room = self.rooms.get(room_id)
        if room is None:
            return RestAnswer(404, {"error": "room not found"})
        room.rest_requests += 1
        first = room.rest_requests == 1
        if first and room.rest_chaos == "flaky":
            return RestAnswer(500, {"error": "database connection reset"})
        delay = room.rest_delay if first and room.rest_chaos == "slow" else 0.0
        return RestAnswer(200, {"data": rest_room(room)}, delay)


def rest_room(room: StoredRoom) -> dict[str, Any]:
    """The room as ``GET /rooms/<id>`` has it: full lead, counts, the last message."""
    last = room.messages[-1] if room.messages else None
    body: dict[str, Any] = {
        "room_id": room.room_id,
        "room_phone": room.phone,
        "room_title": "Personal",
        "room_created_at": room.created_at,
        "room_updated_at": last["created_at"] if last else room.created_at,
        "leads_info": dict(room.lead),
        # Nobody reads in the demo: every message is unread, as the seed's handlers count.
        "unread_count": len(room.messages),
        "message_count": len(room.messages),
        "participants": [],
    }
    if room.rest_shape in ("nested", "both"):
        body["last_message"] = {k: last[k] for k in LAST_MESSAGE_KEYS} if last else None
    if room.rest_shape in ("flat", "both"):
        body["last_message_text"] = last["content_text"] if last else None
        body["last_message_timestamp"] = last["created_at"] if last else None
        body["last_message_type"] = last["content_type"] if last else None
    return body
