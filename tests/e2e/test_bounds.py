"""Bad input and bounds through the real process: what browsers may send (its size), what
the backend may send (any size), answered as the README says."""

from __future__ import annotations

import pytest

from .conftest import Backend, BrowsersFactory, EnricherFactory, stack

pytestmark = [pytest.mark.e2e, pytest.mark.enricher]

LIMIT = 100_000  # ENRICHER_MAX_PAYLOAD_BYTES in these tests


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_browser_message_over_the_size_limit_closes_only_its_connection(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory, transport: str
) -> None:
    proxy, group = await stack(
        backend,
        make_enricher,
        browsers,
        2,
        ["--transports", transport],
        ENRICHER_MAX_PAYLOAD_BYTES=str(LIMIT),
    )
    # Just under the limit (the packet adds its event name and brackets): forwarded.
    under = "u" * (LIMIT - 100)
    assert (await group.emit(0, "echo", under))["args"] == [under]

    # Over it: the connection closes, with a log line and a metric; socket.io-client
    # reconnects by itself, and the other browser never notices.
    await group.emit(0, "echo", "o" * (2 * LIMIT), ack=False)
    rejected = await proxy.wait_log("payload_rejected")
    assert rejected["reason"] == "too_large" and rejected["transport"] == transport
    assert rejected["size"] > 2 * LIMIT and rejected["limit"] == LIMIT
    assert rejected["sid"] and rejected["source"] == "browser"
    await group.wait_until(
        lambda: any(c["browser"] == 0 and c["connects"] == 2 for c in group.connected_lines()),
        "browser 0 to reconnect",
    )
    metrics = await proxy.metrics()
    assert metrics['enricher_client_events_total{event="other",outcome="too_large"}'] == 1
    forwarded = [e for e in backend.child.items if e.get("event") == "client_event"]
    assert [len(e["args"][0]) for e in forwarded] == [len(under)]  # the big one never went on

    assert (await group.emit(0, "echo", "after"))["args"] == ["after"]
    assert (await group.emit(1, "echo", "other"))["args"] == ["other"]
    assert [c["browser"] for c in group.connected_lines()].count(1) == 1


async def test_a_backend_event_of_any_size_reaches_every_browser(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    """6 MB from the backend: above aiohttp's default WebSocket message limit (4 MiB) and
    far above ``max_payload_bytes``, which is for browsers only."""
    proxy, group = await stack(
        backend, make_enricher, browsers, 2, ENRICHER_UPSTREAM__TRANSPORTS='["websocket"]'
    )
    await backend.burst(2, [6_000_000, 10])
    await group.wait_seqs(2, timeout=30)
    for browser in range(2):
        assert [(s["n"], s["ok"]) for s in group.seqs(browser)] == [(0, True), (1, True)]
    assert not proxy.logs("upstream_disconnected")
