"""The backend connection's recent outages, as the join sees them.

After the connection was lost and came back, a ``new_message`` of a room the join has
never seen may belong to a room whose ``new_room`` was emitted while the proxy was away.
:class:`Outages` remembers when the connection was down, in the backend's wall-clock
terms, and tells from the creation time REST gives whether a room was made then. Pure: the
join passes its clock in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from .payloads import parse_timestamp


@dataclass(slots=True)
class Outage:
    """A time the backend connection was down, in the backend's wall-clock terms:
    everything it emitted before ``lost_after`` reached the proxy, what it emitted from
    then until ``restored_at`` may be lost. ``restored`` is the join's clock at the
    reconnection, to forget the outage after ``known_room_ttl``."""

    lost_after: datetime
    restored_at: datetime | None = None
    restored: float | None = None


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Outages:
    """The last ``max_outages`` outages, each forgotten ``ttl`` seconds after it ended."""

    def __init__(self, max_outages: int, ttl: float, clock_skew: float) -> None:
        """``clock_skew``: seconds by which the backend's and REST's clocks may disagree;
        an outage is widened by it on both sides."""
        self._outages: deque[Outage] = deque(maxlen=max_outages)
        self._ttl = ttl
        self._skew = timedelta(seconds=clock_skew)

    def lost(self, last_heard: datetime) -> None:
        """The connection is down; ``last_heard``: when the backend was last heard from."""
        if self._outages and self._outages[-1].restored_at is None:
            return  # still the same outage
        self._outages.append(Outage(lost_after=last_heard))

    def restored(self, at: datetime, now: float) -> Outage | None:
        """The connection is up again since ``at``: the outage it ends, or None when this
        is the first connection (nothing was missed)."""
        if not self._outages or self._outages[-1].restored_at is not None:
            return None
        outage = self._outages[-1]
        outage.restored_at, outage.restored = at, now
        return outage

    def any(self, now: float) -> bool:
        """Whether an outage is recent enough that a room never seen may come from it."""
        outages = self._outages
        while (
            outages and outages[0].restored is not None and outages[0].restored + self._ttl <= now
        ):
            outages.popleft()
        return bool(outages)

    def dates(self, created_at: str | None) -> str:
        """``recovered`` when ``created_at`` (REST's) falls within an outage, else why not:
        ``undated`` or ``old``."""
        created = parse_timestamp(created_at)
        if created is None:
            return "undated"
        for outage in self._outages:
            if outage.lost_after - self._skew <= created and (
                outage.restored_at is None or created <= outage.restored_at + self._skew
            ):
                return "recovered"
        return "old"

    def __len__(self) -> int:
        return len(self._outages)
