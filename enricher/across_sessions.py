"""What transparent mode's sessions share (see enricher/sessions.py): each browser has its
own backend connection, so the same work would be done once per browser. ``GET
/rooms/<id>`` is made once per room for all of them (:class:`SharedRooms`), and a broadcast
every browser receives is decoded, parsed and encoded once (:class:`SharedReading`). One of
each lives beside the sessions, in the :class:`~.relay.Relay`, never inside one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from cachetools import LRUCache, TTLCache

from . import packets
from .backend import FetchRoom, RestResult
from .join_types import Parsers
from .payloads import Parsed, T, parse_message, parse_room


class SharedRooms:
    """``GET /rooms/<id>`` for every session at once: one request per room at a time, and
    its answer (a failure too) given to every session that asks within ``reuse`` seconds
    of it, so that every browser's snapshot is built from the same answers. A session
    asking again (a failure, or no message yet) gets a newer answer than the one it had,
    or a new request."""

    def __init__(self, fetch_room: FetchRoom, reuse: float, clock: Callable[[], float]) -> None:
        self._fetch_room = fetch_room
        self._clock = clock
        self._in_flight: dict[str, asyncio.Future[tuple[float, RestResult]]] = {}
        self._answers: TTLCache[str, tuple[float, RestResult]] = TTLCache(10_000, reuse)
        self.requests = 0  # made to the backend

    async def fetch(self, room_id: str, newer_than: float | None) -> tuple[float, RestResult]:
        """The room's answer and when it came."""
        answer = self._answers.get(room_id)
        if answer is not None and (newer_than is None or answer[0] > newer_than):
            return answer
        request = self._in_flight.get(room_id)
        if request is None:
            # a task of its own: a session that leaves (its own wait cancelled) does not
            # cancel the others'
            request = self._in_flight[room_id] = asyncio.ensure_future(self._request(room_id))
        return await asyncio.shield(request)

    async def _request(self, room_id: str) -> tuple[float, RestResult]:
        try:
            self.requests += 1
            result = await self._fetch_room(room_id, lambda: True)
            answer = (self._clock(), result)
            self._answers[room_id] = answer  # a failure too: every session sees the same
            return answer
        finally:
            del self._in_flight[room_id]

    def __len__(self) -> int:
        return len(self._answers) + len(self._in_flight)


class SharedReading:
    """Backend events as every session reads them: one broadcast arrives once per browser,
    the same text each time; its arguments are decoded, and its payload parsed, once. (The
    results are shared, read-only: the join never changes a payload or a record.)"""

    def __init__(self, size: int = 1024) -> None:
        self._arguments: LRUCache[str, tuple[Any, ...]] = LRUCache(size)
        self._parsed: LRUCache[int, tuple[object, Any]] = LRUCache(size)
        self._snapshots: LRUCache[tuple[int, ...], tuple[tuple[Any, ...], Any]] = LRUCache(size)
        self._encoded: LRUCache[tuple[str, int], tuple[Any, str]] = LRUCache(size)
        self._texts: dict[str, str] = {}
        self._size = size
        self.parsers = Parsers(
            room=self._memo(parse_room), message=self._memo(parse_message), snapshot=self._built
        )

    def _built(self, key: tuple[Any, ...], build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A snapshot made of the same records (the same objects) as one built before is
        that one: built once for every browser that saw the same room."""
        ids = tuple(id(part) for part in key)
        hit = self._snapshots.get(ids)
        if hit is not None and all(a is b for a, b in zip(hit[0], key, strict=True)):
            snapshot: dict[str, Any] = hit[1]
            return snapshot
        snapshot = build()
        self._snapshots[ids] = (key, snapshot)  # the records kept alive: their ids stay theirs
        return snapshot

    def event(self, name: str, args: tuple[Any, ...]) -> str:
        """An event's packet, encoded once for the same (one-argument) payload object."""
        if len(args) != 1:
            return packets.event(name, args)
        hit = self._encoded.get((name, id(args[0])))
        if hit is not None and hit[0] is args[0]:
            return hit[1]
        text = packets.event(name, args)
        self._encoded[(name, id(args[0]))] = (args[0], text)
        return text

    def same(self, text: str) -> str:
        """The one copy of a message that every session keeps in its recovery log (each
        browser's copy of a broadcast arrives as a string of its own)."""
        texts = self._texts
        kept = texts.setdefault(text, text)
        if len(texts) > self._size:
            texts.clear()  # a broadcast still arriving is kept twice, no more
        return kept

    def arguments(self, text: str, header: packets.Header) -> tuple[Any, ...]:
        args = self._arguments.get(text)
        if args is None:
            args = self._arguments[text] = packets.arguments(text, header)
        return args

    def _memo(self, parse: Callable[[object], Parsed[T]]) -> Callable[[object], Parsed[T]]:
        cache = self._parsed

        def parsed(payload: object) -> Parsed[T]:
            hit = cache.get(id(payload))
            if hit is not None and hit[0] is payload:  # the same object, still alive
                result: Parsed[T] = hit[1]
                return result
            result = parse(payload)
            cache[id(payload)] = (payload, result)
            return result

        return parsed
