"""A simulated backend and the seed's frontend handlers, for testing the join.

The backend saves rooms and messages (the truth, as ``GET /rooms/<id>`` tells it) and
emits their events; browsers apply the seed's recommended handlers to what the proxy
emits. A test then compares each browser's sidebar with the truth.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from enricher.join_types import Action, Emit

BASE_TIME = datetime(2025, 11, 2, 10, 30, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class BackendRoom:
    room_id: str
    phone: str
    lead_name: str | None  # None: the customer has no lead
    messages: list[dict[str, Any]] = field(default_factory=list)
    created: bool = False
    created_at: str = iso(BASE_TIME)

    @property
    def lead(self) -> dict[str, Any] | None:
        if self.lead_name is None:
            return None
        return {
            "id": f"lead-{self.room_id}",
            "name": self.lead_name,
            "phone": self.phone,
            "outstanding": 50_000_000,
            "loan_type": "personal_loan",
            "leads_status": "cold",
            "contact_status": "contacted",
        }

    def new_room_payload(self, *, with_lead: bool = True) -> dict[str, Any]:
        """What the backend's ensureRoom() emits: minimal, no last message."""
        lead = self.lead if with_lead else None
        return {
            "room_id": self.room_id,
            "room_phone": self.phone,
            "room_title": "Personal",
            "room_created_at": self.created_at,
            "room_updated_at": self.created_at,
            "leads_info": {"id": lead["id"], "phone": self.phone, "name": lead["name"]}
            if lead
            else None,
            "unread_count": 0,
            "last_message": None,
            "participants": [],
        }

    def rest_body(self, shape: str) -> dict[str, Any]:
        """What ``GET /rooms/<id>`` answers now, flat or nested."""
        last = self.messages[-1] if self.messages else None
        room: dict[str, Any] = {
            "room_id": self.room_id,
            "room_phone": self.phone,
            "room_title": "Personal",
            "room_created_at": self.created_at,
            "room_updated_at": self.created_at,
            "leads_info": self.lead,
            "unread_count": len(self.messages),
            "message_count": len(self.messages),
            "participants": [],
        }
        if shape == "nested":
            room["last_message"] = (
                {
                    k: last[k]
                    for k in ("id", "content_text", "content_type", "created_at", "user_id")
                }
                if last
                else None
            )
        else:
            room["last_message_text"] = last["content_text"] if last else None
            room["last_message_timestamp"] = last["created_at"] if last else None
            room["last_message_type"] = last["content_type"] if last else None
        return {"data": room}


class Backend:
    """Rooms and messages, with timestamps that never go back."""

    def __init__(self) -> None:
        self.rooms: dict[str, BackendRoom] = {}
        self._ticks = itertools.count(1)
        self._tick = 0

    def add_room(self, room_id: str, phone: str, lead_name: str | None) -> BackendRoom:
        room = self.rooms[room_id] = BackendRoom(room_id, phone, lead_name)
        return room

    def moment(self) -> datetime:
        """The backend's clock now: the time of the latest thing it saved."""
        return BASE_TIME + timedelta(milliseconds=self._tick)

    def time_passes(self) -> None:
        """A moment passes: what is saved next is later than anything saved so far."""
        self._tick = next(self._ticks)

    def create_room(self, room_id: str) -> BackendRoom:
        """ensureRoom(): the room is saved now (``room_created_at``)."""
        room = self.rooms[room_id]
        self._tick = next(self._ticks)
        room.created, room.created_at = True, iso(self.moment())
        return room

    def save_message(
        self, room_id: str, text: str, user_id: str | None = None, *, same_moment: bool = False
    ) -> dict[str, Any]:
        """Save a message; ``same_moment`` gives it the time of the one saved before
        (one transaction, or a clock of coarse resolution)."""
        room = self.rooms[room_id]
        if not same_moment or not self._tick:
            self._tick = next(self._ticks)
        moment = iso(BASE_TIME + timedelta(milliseconds=self._tick))
        message = {
            "id": f"{room_id}-m{len(room.messages) + 1}",
            "room_id": room_id,
            "user_id": user_id,
            "content_type": "text",
            "content_text": text,
            "wa_message_id": f"wamid.{room_id}.{len(room.messages) + 1}",
            "status": "sent",
            "media_type": None,
            "gcs_url": None,
            "mime_type": None,
            "metadata": {},
            "created_at": moment,
            "updated_at": moment,
        }
        room.messages.append(message)
        return message


def display_name(room: dict[str, Any]) -> Any:
    """The seed's chain: ``leads_info?.name || room_title || room_phone``."""
    lead = room.get("leads_info") or {}
    return lead.get("name") or room.get("room_title") or room.get("room_phone")


@dataclass
class Browser:
    """One browser, with the seed's modern and legacy handlers side by side; no room open."""

    modern: list[dict[str, Any]] = field(default_factory=list)
    legacy: list[dict[str, Any]] = field(default_factory=list)
    deliveries: dict[tuple[str, str], int] = field(default_factory=dict)
    snapshots: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Emit) and action.room is None:
                self.receive(action.event, action.args[0] if action.args else None)

    def receive(self, event: str, data: Any) -> None:
        if event == "new_room_complete":
            self.snapshots.append(data)
            self.modern.insert(0, copy.deepcopy(data))
        elif event == "new_room":
            self.legacy.insert(0, copy.deepcopy(data))
        elif event == "new_message":
            key = (event, data["id"])
            self.deliveries[key] = self.deliveries.get(key, 0) + 1
            for room in self.modern:
                if room["room_id"] == data["room_id"]:
                    room["last_message"] = {
                        "content_text": data["content_text"],
                        "content_type": data["content_type"],
                        "created_at": data["created_at"],
                    }
                    room["unread_count"] = (room.get("unread_count") or 0) + 1
            for room in self.legacy:
                if room["room_id"] == data["room_id"]:
                    room["last_message_text"] = data["content_text"]
                    room["last_message_timestamp"] = data["created_at"]
                    room["last_message_type"] = data["content_type"]
                    room["unread_count"] = (room.get("unread_count") or 0) + 1

    def sidebar(self, style: str) -> dict[str, list[dict[str, Any]]]:
        """Entries per room id, in the shape a test compares: name, last message, unread."""
        entries: dict[str, list[dict[str, Any]]] = {}
        for room in self.modern if style == "modern" else self.legacy:
            if style == "modern":
                last = room.get("last_message") or {}
                text, moment = last.get("content_text"), last.get("created_at")
            else:
                text, moment = room.get("last_message_text"), room.get("last_message_timestamp")
            entries.setdefault(room["room_id"], []).append(
                {
                    "name": display_name(room),
                    "last_text": text,
                    "last_at": moment,
                    "unread": room.get("unread_count"),
                }
            )
        return entries


def truth(room: BackendRoom) -> dict[str, Any]:
    """What a page refresh shows for the room."""
    last = room.messages[-1] if room.messages else None
    return {
        "name": room.lead_name or f"Customer {room.phone}",
        "last_text": last["content_text"] if last else None,
        "last_at": last["created_at"] if last else None,
        "unread": len(room.messages),
    }
