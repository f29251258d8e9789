"""A browser that sends refused events without end cannot flood the log: its lines are
paced, every refusal is still counted, and the browser still gets each error."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry, Counter

from enricher import refusals as module
from enricher.refusals import LOG_BURST, Refusals

from ..tools import Clock


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The log lines refusals write, as their fields (level, event and the rest)."""
    written: list[dict[str, Any]] = []

    def keep(logger: Any, level: str, fields: dict[str, Any]) -> Any:
        written.append({"log_level": level, **fields})
        raise structlog.DropEvent

    logger = structlog.wrap_logger(
        structlog.testing.CapturingLogger(),
        processors=[keep],
        wrapper_class=structlog.make_filtering_bound_logger(0),
    )
    monkeypatch.setattr(module, "log", logger)
    return written


def setup() -> tuple[Refusals, CollectorRegistry, Clock]:
    clock = Clock()
    registry = CollectorRegistry()
    counter = Counter("events", "", ["event", "outcome"], registry=registry)
    return Refusals(counter, clock), registry, clock


def test_a_browser_refused_without_end_is_logged_at_a_pace_and_counted_every_time(
    lines: list[dict[str, Any]],
) -> None:
    refusals, registry, clock = setup()
    answers = [refusals.refuse("b1", "x", "event_not_allowed", "s1") for _ in range(100)]
    assert len(lines) == LOG_BURST
    refusals.refuse("b2", "x", "event_not_allowed")  # another browser: its own pace
    assert len(lines) == LOG_BURST + 1
    clock.now = 1.0
    refusals.refuse("b1", "room:new_message", "rate_limited", "s1")
    assert answers == [{"error": "event_not_allowed", "event": "x"}] * 100
    counted = lambda event, outcome: registry.get_sample_value(  # noqa: E731
        "events_total", {"event": event, "outcome": outcome}
    )
    assert counted("other", "event_not_allowed") == 101
    assert counted("room:new_message", "rate_limited") == 1
    assert lines[0] == {
        "event": "client_event_refused",
        "log_level": "warning",
        "client_event": "x",
        "reason": "event_not_allowed",
        "sid": "s1",
    }
    assert lines[LOG_BURST]["sid"] == "b2"
    # the next line of b1 says how many were left out
    assert lines[-1]["unlogged"] == 100 - LOG_BURST
    assert lines[-1]["reason"] == "rate_limited"


def test_a_browser_gone_is_forgotten(lines: list[dict[str, Any]]) -> None:
    refusals, _, _ = setup()
    for _ in range(LOG_BURST + 3):
        refusals.refuse("b1", "x", "event_not_allowed")
    assert len(refusals) == 1
    refusals.forget("b1")
    assert len(refusals) == 0
    refusals.refuse("b1", "x", "event_not_allowed")
    assert len(lines) == LOG_BURST + 1 and "unlogged" not in lines[-1]


def test_a_refusal_that_closes_its_connection_is_logged_and_keeps_nothing(
    lines: list[dict[str, Any]],
) -> None:
    refusals, _, _ = setup()
    for _ in range(LOG_BURST + 1):
        refusals.refuse("b1", "x", "event_invalid")
    refusals.refuse("b1", "x", "attachments_too_many", closing=True)
    refusals.refuse("b2", "other", "not_engineio", closing=True)
    assert [line["reason"] for line in lines[LOG_BURST:]] == [
        "attachments_too_many",
        "not_engineio",
    ]
    refusals.forget("b1")
    assert len(refusals) == 0


def test_a_page_of_another_origin_retrying_without_end_is_logged_at_a_pace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from enricher import admission
    from enricher.metrics import Metrics

    written: list[dict[str, Any]] = []

    def keep(logger: Any, level: str, fields: dict[str, Any]) -> Any:
        written.append(fields)
        raise structlog.DropEvent

    monkeypatch.setattr(
        admission,
        "log",
        structlog.wrap_logger(
            structlog.testing.CapturingLogger(),
            processors=[keep],
            wrapper_class=structlog.make_filtering_bound_logger(0),
        ),
    )
    metrics, clock = Metrics(), Clock()
    check = admission.origins_check(["https://chat.example.com"], metrics, clock)
    page = {"HTTP_HOST": "enricher.example.com", "REMOTE_ADDR": "203.0.113.9"}
    assert check("https://chat.example.com", dict(page))
    refused = [check("https://evil.example", dict(page)) for _ in range(100)]
    assert refused == [False] * 100
    assert len(written) == LOG_BURST  # then paced
    clock.now = 5.0
    check("https://evil.example", dict(page))
    assert written[-1]["unlogged"] == 100 - LOG_BURST  # the ones not logged, said
    counted = metrics.registry.get_sample_value(
        "enricher_browser_admissions_total", {"outcome": "origin"}
    )
    assert counted == 101  # every one counted
