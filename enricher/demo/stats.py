"""enricher's own numbers for the page's strip, read from its Prometheus registry.

Pure: takes a registry (or its bucket counts) and returns plain numbers; nothing is
scraped over HTTP and nothing is kept between calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

HOLD_HISTOGRAM = "enricher_snapshot_hold_seconds"


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a histogram, as Prometheus' ``histogram_quantile`` gives it.

    ``buckets`` are ``(upper bound, cumulative count)`` pairs, sorted, ``+Inf`` last. The
    answer is interpolated linearly inside the bucket the quantile falls in; in the
    ``+Inf`` bucket it is the highest finite bound. ``None`` when nothing was observed.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in registry.collect()
        for sample in family.samples
    ]


def proxy_stats(registry: CollectorRegistry) -> dict[str, Any]:
    """Rooms held now, snapshots sent by enrichment, hold time p50/p99 (seconds), and more.

    ``{"rooms_held": 0, "snapshots": {"complete": 12, "partial": 0},
    "hold_seconds": {"p50": 0.004, "p99": 0.61, "count": 12},
    "duplicates_suppressed": 3, "browsers": 1, "upstream_connected": true}``
    """
    snapshots = {"complete": 0, "partial": 0}
    buckets: list[tuple[float, float]] = []
    stats: dict[str, Any] = {"rooms_held": 0, "duplicates_suppressed": 0, "browsers": 0}
    connected = 0.0
    for name, labels, value in _samples(registry):
        if name == "enricher_snapshots_total":
            key = labels.get("enrichment", "")
            snapshots[key] = snapshots.get(key, 0) + int(value)
        elif name == f"{HOLD_HISTOGRAM}_bucket":
            buckets.append((float(labels["le"]), value))
        elif name == "enricher_rooms_held":
            stats["rooms_held"] = int(value)
        elif name == "enricher_duplicates_suppressed_total":
            stats["duplicates_suppressed"] += int(value)
        elif name == "enricher_browsers_connected":
            stats["browsers"] = int(value)
        elif name == "enricher_upstream_connected":
            connected = value
    buckets.sort()
    stats["snapshots"] = snapshots
    stats["hold_seconds"] = {
        "p50": histogram_quantile(0.5, buckets),
        "p99": histogram_quantile(0.99, buckets),
        "count": int(buckets[-1][1]) if buckets else 0,
    }
    stats["upstream_connected"] = connected == 1
    return stats
