"""A broadcast written straight to a socket never overtakes one queued for it: not even
while its writer has taken the queued one off the queue and not yet written it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from enricher import fanout
from enricher.app import Running


async def test_a_direct_write_waits_for_what_the_writer_has_taken(
    proxy: Running, browsers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (browser,) = await browsers(1)
    sio = proxy.downstream.sio
    monkeypatch.setattr(fanout, "WRITE_BUFFER_LIMIT", -1)  # every socket looks backed up
    await sio.emit("seq", 1)  # queued
    monkeypatch.setattr(fanout, "WRITE_BUFFER_LIMIT", 64 * 1024)
    # One loop iteration: the socket's writer takes 1 off its queue, and writes it later.
    await asyncio.sleep(0)
    await sio.emit("seq", 2)  # the queue is empty now: only the backlog count holds it
    got = [await browser.next("seq") for _ in range(2)]
    assert got == [("seq", (1,)), ("seq", (2,))]
