"""The REST circuit breaker, on an injected clock."""

from __future__ import annotations

from enricher.backend import CircuitBreaker

from ..tools import Clock


def test_opens_after_failures_in_a_row_and_lets_one_probe_through_after_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown=5.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record(ok=False)
    assert breaker.allow()
    breaker.record(ok=True)  # a success in between: the count starts again
    for _ in range(3):
        assert breaker.allow()
        breaker.record(ok=False)
    assert breaker.is_open and not breaker.allow()

    clock.now = 4.9
    assert not breaker.allow()
    clock.now = 5.0
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.record(ok=False)  # it failed: open for another cooldown
    clock.now = 9.9
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()
    breaker.record(ok=True)
    assert not breaker.is_open and breaker.allow() and breaker.allow()


def test_a_probe_that_was_not_sent_does_not_close_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown=1.0, clock=clock)
    breaker.record(ok=False)
    clock.now = 1.0
    assert breaker.allow()
    breaker.release()
    assert breaker.is_open and breaker.allow()  # the next request is the probe
