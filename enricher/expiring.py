"""A mapping whose entries live a fixed time from their last write: what the join
remembers (message ids, rooms sent, early messages).

cachetools' ``TTLCache`` does this for any mix of lifetimes, with a linked list, an LRU
order and an expiry pass on every write; in transparent mode the join exists once per
browser, and those made a quarter of enricher's CPU at 200 browsers x 100 msg/s and ~250
bytes per remembered id per browser (docs/performance.md). One lifetime for all entries
makes it simpler: a dict's insertion order is then expiry order, so expired entries are
always at the front and a pass once a second removes them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")

_SWEEP_EVERY = 1.0  # seconds between passes that remove expired entries


class Expiring(Generic[K, V]):
    """At most ``maxsize`` entries, each for ``ttl`` seconds of ``timer()`` after it was
    last written; when full, the oldest written leaves first. An expired entry is never
    returned, whether or not it was removed yet."""

    __slots__ = ("_items", "_maxsize", "_swept", "_timer", "_ttl")

    def __init__(self, maxsize: int, ttl: float, timer: Callable[[], float]) -> None:
        self._items: dict[K, tuple[float, V]] = {}
        self._maxsize = maxsize
        self._ttl = ttl
        self._timer = timer
        self._swept = float("-inf")

    def __setitem__(self, key: K, value: V) -> None:
        now = self._timer()
        if now - self._swept >= _SWEEP_EVERY:
            self._sweep(now)
        items = self._items
        items.pop(key, None)  # written again: it moves to the end
        items[key] = (now + self._ttl, value)
        if len(items) > self._maxsize:
            for oldest in list(itertools.islice(items, len(items) - self._maxsize)):
                del items[oldest]

    def get(self, key: K) -> V | None:
        entry = self._items.get(key)
        if entry is None or entry[0] <= self._timer():
            return None
        return entry[1]

    def __getitem__(self, key: K) -> V:
        entry = self._items.get(key)
        if entry is None or entry[0] <= self._timer():
            raise KeyError(key)
        return entry[1]

    def __contains__(self, key: K) -> bool:
        entry = self._items.get(key)
        return entry is not None and entry[0] > self._timer()

    def pop(self, key: K, default: D) -> V | D:
        """The entry's value, removed (``default`` when there is none, or it expired)."""
        entry = self._items.pop(key, None)
        if entry is None or entry[0] <= self._timer():
            return default
        return entry[1]

    def __len__(self) -> int:
        """The entries not expired."""
        self._sweep(self._timer())
        return len(self._items)

    def __iter__(self) -> Iterator[K]:
        self._sweep(self._timer())
        return iter(list(self._items))

    def _sweep(self, now: float) -> None:
        """Remove the expired entries: those at the front."""
        self._swept = now
        items = self._items
        expired = []
        for key, (expires, _) in items.items():
            if expires > now:
                break
            expired.append(key)
        for key in expired:
            del items[key]
