"""enricher's numbers for the page, from its own metrics registry."""

from __future__ import annotations

import math

import pytest

from enricher.demo.stats import histogram_quantile, proxy_stats
from enricher.metrics import Metrics

INF = math.inf


def test_quantile_interpolates_inside_its_bucket() -> None:
    buckets = [(0.1, 0.0), (0.5, 10.0), (1.0, 20.0), (INF, 20.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.5)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.3)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.99)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    assert histogram_quantile(0.99, [(1.0, 1.0), (5.0, 1.0), (INF, 4.0)]) == 5.0


def test_no_observations_no_quantile() -> None:
    assert histogram_quantile(0.5, [(1.0, 0.0), (INF, 0.0)]) is None
    assert histogram_quantile(0.5, []) is None


def test_proxy_stats_reads_the_registry() -> None:
    metrics = Metrics()
    metrics.rooms_held.set(2)
    for held in (0.004, 0.004, 0.2, 0.6):
        metrics.snapshot_sent("complete", None, held)
    metrics.snapshot_sent("partial", "rest_timeout", 3.0)
    metrics.duplicates.labels("new_message").inc(3)
    metrics.duplicates.labels("new_room").inc()
    metrics.upstream_state(True)

    stats = proxy_stats(metrics.registry)

    assert stats["rooms_held"] == 2
    assert stats["snapshots"] == {"complete": 4, "partial": 1}
    assert stats["duplicates_suppressed"] == 4
    assert stats["upstream_connected"] is True
    hold = stats["hold_seconds"]
    assert hold["count"] == 5
    assert 0.1 < hold["p50"] <= 0.25  # the 3rd of 5 observations, in the (0.1, 0.25] bucket
    assert 2 < hold["p99"] <= 3


def test_proxy_stats_before_anything_happened() -> None:
    stats = proxy_stats(Metrics().registry)
    assert stats["snapshots"] == {"complete": 0, "partial": 0}
    assert stats["hold_seconds"] == {"p50": None, "p99": None, "count": 0}
    assert stats["upstream_connected"] is False
