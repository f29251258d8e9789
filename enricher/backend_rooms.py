"""The backend rooms enricher's one connection is in, for its browsers (shared mode).

A browser's ``room:join`` puts it in the local room ``room:<id>``; the backend hears one
``room:join`` for the room's first browser and one ``room:leave`` after its last. On a new
backend connection every room with browsers is joined again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

from .payloads import Rejected, room_id_of
from .upstream import UpstreamUnavailable

log = structlog.get_logger("enricher.downstream")

ROOM_JOIN = "room:join"
ROOM_LEAVE = "room:leave"


def room_of(args: tuple[Any, ...]) -> str:
    """The room id of a ``room:join`` or ``room:leave``; raises :class:`Rejected`."""
    payload = args[0] if args else None
    if not isinstance(payload, dict):
        raise Rejected("not_an_object")
    return room_id_of(payload.get("room_id"))


class RoomMembership:
    """Which browsers are in which backend room, so the proxy joins each room once."""

    def __init__(self) -> None:
        self._members: dict[str, set[str]] = defaultdict(set)
        self._rooms_of: dict[str, set[str]] = defaultdict(set)

    def join(self, sid: str, room_id: str) -> bool:
        """Add a browser; True when it is the room's first."""
        members = self._members[room_id]
        first = not members
        members.add(sid)
        self._rooms_of[sid].add(room_id)
        return first

    def leave(self, sid: str, room_id: str) -> bool:
        """Remove a browser; True when the room has no browser left."""
        members = self._members.get(room_id)
        if not members or sid not in members:
            return False
        members.discard(sid)
        self._rooms_of[sid].discard(room_id)
        if not self._rooms_of[sid]:
            del self._rooms_of[sid]
        if members:
            return False
        del self._members[room_id]
        return True

    def drop(self, sid: str) -> list[str]:
        """Remove a browser from every room; the rooms left empty."""
        return [
            room_id for room_id in list(self._rooms_of.get(sid, ())) if self.leave(sid, room_id)
        ]

    def rooms(self) -> list[str]:
        return list(self._members)

    def rooms_of(self, sid: str) -> set[str]:
        return set(self._rooms_of.get(sid, ()))

    def __len__(self) -> int:
        """Entries kept: one per room with browsers, one per browser in a room."""
        return len(self._members) + len(self._rooms_of)


class BackendRooms:
    """Browsers' room memberships, told to the backend on ``emit`` (enricher's connection)."""

    def __init__(self, emit: Callable[[str, tuple[Any, ...]], Awaitable[None]]) -> None:
        self._emit = emit
        self.membership = RoomMembership()

    async def join(self, sid: str, room_id: str) -> None:
        if self.membership.join(sid, room_id):
            await self._tell(ROOM_JOIN, room_id)

    async def leave(self, sid: str, room_id: str) -> None:
        if self.membership.leave(sid, room_id):
            await self._tell(ROOM_LEAVE, room_id)

    async def release(self, sid: str) -> None:
        """A browser gone for good: out of every room."""
        for room_id in self.membership.drop(sid):
            await self._tell(ROOM_LEAVE, room_id)

    async def set_rooms(self, sid: str, wanted: Iterable[str]) -> None:
        """Exactly ``wanted`` for a browser (a session given back may have had others)."""
        wanted = set(wanted)
        for room_id in self.membership.rooms_of(sid) - wanted:
            await self.leave(sid, room_id)
        for room_id in wanted:
            await self.join(sid, room_id)

    async def rejoin_all(self) -> None:
        """After a new backend connection: join again every room a browser is in."""
        for room_id in self.membership.rooms():
            await self._tell(ROOM_JOIN, room_id)

    async def _tell(self, event: str, room_id: str) -> None:
        try:
            await self._emit(event, ({"room_id": room_id},))
        except UpstreamUnavailable:
            # Rooms are joined again on the next connection.
            log.info("backend_room_deferred", event=event, room_id=room_id)

    def __len__(self) -> int:
        return len(self.membership)
