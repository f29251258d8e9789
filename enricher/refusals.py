"""Browser events enricher does not send on, the same in both upstream modes: each is
counted, answered with the error its browser gets in its ack, and logged; and the token
bucket that paces a browser's events (``client_event_rate``) and its log lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import Counter

from .metrics import event_label

log = structlog.get_logger("enricher.refusals")

# A browser's refusal log lines: this many at once, then one a second; those left out
# are counted in its next line (``unlogged``), every refusal in the metric.
LOG_BURST = 10
LOG_RATE = 1.0


class RateLimit:
    """A token bucket per browser: ``rate`` events a second, ``burst`` at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, sid: str) -> bool:
        """Take a token for one event of ``sid``; False when it has none left."""
        if self._rate <= 0:
            return True
        now = self._clock()
        tokens, at = self._buckets.get(sid, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[sid] = (tokens - 1.0 if allowed else tokens, now)
        return allowed

    def forget(self, sid: str) -> None:
        self._buckets.pop(sid, None)

    def __len__(self) -> int:
        return len(self._buckets)


class PacedLines:
    """Log lines of one kind, paced per key (a browser, a client, one kind of refusal):
    ``LOG_BURST`` at once, then ``LOG_RATE`` a second, so that whoever repeats a refused
    request without end floods no log. A line written says how many were not since the
    previous one (``unlogged``)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._lines = RateLimit(LOG_RATE, LOG_BURST, clock)
        self._unlogged: dict[str, int] = {}

    def due(self, key: str) -> dict[str, int] | None:
        """The fields to add to this line of ``key``'s, or None: not written now."""
        if not self._lines.allow(key):
            self._unlogged[key] = self._unlogged.get(key, 0) + 1
            return None
        unlogged = self._unlogged.pop(key, 0)
        return {"unlogged": unlogged} if unlogged else {}

    def forget(self, key: str) -> None:
        self._lines.forget(key)
        self._unlogged.pop(key, None)

    def __len__(self) -> int:
        return len(self._lines)


class Refusals:
    """What happens to each refused browser event. ``browser`` is its engine.io
    connection's id, forgotten when that connection closes; ``sid`` names it in logs."""

    def __init__(self, counter: Counter, clock: Callable[[], float]) -> None:
        self._counter = counter
        self._lines = PacedLines(clock)

    def refuse(
        self, browser: str, event: str, reason: str, sid: str | None = None, closing: bool = False
    ) -> dict[str, Any]:
        """The error ack for a refused event, counted and (paced per browser) logged;
        ``closing``: its connection is being closed for it, its line is its last."""
        self._counter.labels(event_label(event), reason).inc()
        fields = {} if closing else self._lines.due(browser)
        if fields is not None:
            log.warning(
                "client_event_refused",
                client_event=event,
                reason=reason,
                sid=sid or browser,
                **fields,
            )
        return {"error": reason, "event": event}

    def forget(self, browser: str) -> None:
        """Its connection closed."""
        self._lines.forget(browser)

    def __len__(self) -> int:
        """Connections something is kept for."""
        return len(self._lines)
