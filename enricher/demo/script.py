"""Who writes next, and in what disorder: the simulation as a list of steps per visit.

Pure and seeded: :class:`Script` takes the time as an argument and draws everything else
from its own random generator, so the same seed gives the same customers and chaos. The
simulator carries the steps out: it adds rooms, saves messages, sends events and pauses.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from . import people
from .store import RestChaos, RestShape, StoredRoom, message_payload, new_room_payload

RECENT_CUSTOMERS = 40  # returning customers are drawn from the latest ones, to stay on screen


@dataclass(frozen=True)
class AddRoom:
    """``ensureRoom()`` created the room (REST knows it from now on)."""

    room: StoredRoom


@dataclass(frozen=True)
class Save:
    """The message is saved (REST shows it from now on)."""

    message: dict[str, Any]


@dataclass(frozen=True)
class Send:
    """Emit ``event`` to every socket, or to the sockets in ``to``."""

    event: str
    payload: dict[str, Any]
    to: str | None = None


@dataclass(frozen=True)
class Pause:
    """Wait before the next step (a database write, another backend instance)."""

    seconds: float


Step = AddRoom | Save | Send | Pause
VisitKind = Literal["new_customer", "returning_customer", "agent_reply"]


@dataclass(frozen=True)
class Chaos:
    """The disorder of docs/contract.md that one customer's events go through."""

    message_first: bool = False  # the first new_message arrives before new_room
    duplicates: bool = False  # every event of the customer is sent twice
    first_message_lost: bool = False  # saved, but its events never go out
    rest: RestChaos | None = None  # the room's first GET /rooms/<id> is slow, or a 500

    @classmethod
    def draw(cls, rng: random.Random) -> Chaos:
        rest_roll = rng.random()
        return cls(
            message_first=rng.random() < 0.25,
            duplicates=rng.random() < 0.2,
            first_message_lost=rng.random() < 0.15,
            rest="slow" if rest_roll < 0.2 else "flaky" if rest_roll < 0.35 else None,
        )


@dataclass
class Customer:
    room_id: str
    chaos: Chaos


@dataclass(frozen=True)
class Visit:
    """One thing that happens to one room: a new customer, a returning one, an agent reply."""

    kind: VisitKind
    room_id: str
    steps: tuple[Step, ...]


def iso(moment: float) -> str:
    """Epoch seconds as the backend writes times: ``2025-11-02T10:30:00.000Z``."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class Script:
    """Draws visits: about half new customers, the rest returning ones and agent replies."""

    def __init__(self, rng: random.Random, *, chaos: bool) -> None:
        self._rng = rng
        self._chaos = chaos
        self._customers: list[Customer] = []
        self._names: set[str] = set()
        self._last_ms = 0
        self._agent_id = self._uuid()

    def next_visit(self, now: float) -> Visit:
        """What happens next, at ``now`` (epoch seconds)."""
        roll = self._rng.random()
        if not self._customers or roll < 0.5:
            return self._new_customer(now)
        customer = self._rng.choice(self._customers[-RECENT_CUSTOMERS:])
        kind: VisitKind
        if roll < 0.85:
            kind, text, user_id = "returning_customer", people.customer_line(self._rng), None
        else:
            kind, text, user_id = "agent_reply", people.agent_line(self._rng), self._agent_id
        message = self._message(customer.room_id, text, user_id, now)
        steps: list[Step] = [Save(message), *self._message_events(message, customer.chaos)]
        return Visit(kind, customer.room_id, tuple(steps))

    def _new_customer(self, now: float) -> Visit:
        rng = self._rng
        chaos = Chaos.draw(rng) if self._chaos else Chaos()
        phone, name = people.phone(rng), self._unused_name()
        lead = {"id": self._uuid(), "name": name, "phone": phone, **people.lead_fields(rng)}
        shape: RestShape = rng.choice(("flat", "nested", "both"))
        room = StoredRoom(
            room_id=self._uuid(),
            phone=phone,
            lead=lead,
            created_at=self._time(now),
            rest_shape=shape,
            rest_chaos=chaos.rest,
            rest_delay=round(rng.uniform(0.3, 0.8), 3),
        )
        self._customers.append(Customer(room.room_id, chaos))
        # What ensureRoom() knows of the name: the lead's, none yet, or the seed's default.
        known = rng.random()
        lead_name = name if known < 0.45 else None if known < 0.8 else f"Customer {phone}"
        new_room = self._twice(Send("new_room", new_room_payload(room, lead_name)), chaos)
        message = self._message(room.room_id, people.customer_line(rng), None, now)
        first: list[Step] = [Save(message)]
        if not chaos.first_message_lost:
            first += self._message_events(message, chaos)
        pause = Pause(round(rng.uniform(0.02, 0.15), 3))
        if chaos.message_first:
            steps = [AddRoom(room), *first, pause, *new_room]
        else:
            steps = [AddRoom(room), *new_room, pause, *first]
        return Visit("new_customer", room.room_id, tuple(steps))

    def _unused_name(self) -> str:
        # Two customers with one name would look like one room listed twice.
        for _ in range(20):
            name = people.name(self._rng)
            if name not in self._names:
                break
        self._names.add(name)
        return name

    def _message_events(self, message: dict[str, Any], chaos: Chaos) -> list[Step]:
        room = f"room:{message['room_id']}"
        return [
            *self._twice(Send("room:new_message", message, to=room), chaos),
            *self._twice(Send("new_message", message), chaos),
        ]

    def _twice(self, send: Send, chaos: Chaos) -> list[Step]:
        if not chaos.duplicates:
            return [send]
        return [send, Pause(round(self._rng.uniform(0.0, 0.05), 3)), send]

    def _message(self, room_id: str, text: str, user_id: str | None, now: float) -> dict[str, Any]:
        return message_payload(self._uuid(), room_id, text, user_id, self._time(now))

    def _time(self, now: float) -> str:
        # Milliseconds that never repeat nor go back, as a database clock would give.
        self._last_ms = max(int(now * 1000), self._last_ms + 1)
        return iso(self._last_ms / 1000)

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
