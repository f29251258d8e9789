"""Broadcasts reach every kind of browser once and in order: the direct path (one frame
built once, written straight to each idle WebSocket) and python-socketio's queued path
(polling, upgrading or busy browsers), mixed on the same sockets, with and without
permessage-deflate negotiated."""

from __future__ import annotations

import pytest

from .conftest import Backend, Browsers, BrowsersFactory, Enricher, EnricherFactory, stack

# shared mode's broadcast path: one frame written to every browser
pytestmark = [pytest.mark.e2e, pytest.mark.enricher, pytest.mark.upstream_mode("shared")]

# Payload sizes in turn: WebSocket frames with all three length encodings (7-bit, 16-bit,
# 64-bit), and characters beyond ASCII so a frame's length must count bytes.
SIZES = [10, 300, 2_000, 70_000]
WEBSOCKET = ["--transports", "websocket"]
KINDS = {
    "websocket": WEBSOCKET,
    "websocket without deflate": ["--transports", "websocket", "--no-deflate"],
    "polling": ["--transports", "polling"],
    "polling, then the upgrade": [],
}
PER_KIND = 3


async def deliveries(proxy: Enricher) -> dict[str, float]:
    """``enricher_deliveries_total`` by path."""
    metrics = await proxy.metrics()
    return {
        path: metrics.get(f'enricher_deliveries_total{{path="{path}"}}', 0.0)
        for path in ("direct", "queued")
    }


def assert_in_order(group: Browsers, browser: int, count: int) -> None:
    seqs = group.seqs(browser)
    assert [s["n"] for s in seqs] == list(range(count)), f"browser {browser}"
    assert all(s["ok"] for s in seqs), f"browser {browser}: a payload arrived damaged"


@pytest.mark.parametrize(
    ("compression", "direct"),
    [(False, True), (True, True), (False, False)],
    ids=["compression off", "compression on", "direct broadcast off"],
)
async def test_every_kind_of_browser_gets_every_broadcast_once_in_order(
    backend: Backend,
    make_enricher: EnricherFactory,
    browsers: BrowsersFactory,
    compression: bool,
    direct: bool,
) -> None:
    proxy = await make_enricher(
        backend,
        ENRICHER_WEBSOCKET__COMPRESSION=str(compression).lower(),
        ENRICHER_WEBSOCKET__DIRECT_BROADCAST=str(direct).lower(),
    )
    groups = {
        kind: await browsers(
            proxy.public_url, PER_KIND, context=[backend.child, proxy.child], flags=flags
        )
        for kind, flags in KINDS.items()
    }
    # permessage-deflate is negotiated only when the setting is on and the browser offers it.
    for kind, group in groups.items():
        for browser in await group.dump():
            offered = (
                browser["transport"]["name"] == "websocket" and "--no-deflate" not in KINDS[kind]
            )
            negotiated = "permessage-deflate" in browser["transport"]["extensions"]
            assert negotiated == (compression and offered), (kind, browser["transport"])

    count = 200
    await backend.burst(count, SIZES)
    for group in groups.values():
        await group.wait_seqs(count)
    for group in groups.values():
        for browser in range(PER_KIND):
            assert_in_order(group, browser, count)

    paths = await deliveries(proxy)
    assert paths["direct"] + paths["queued"] == count * PER_KIND * len(KINDS)
    if direct:
        assert paths["direct"] >= count * PER_KIND  # the idle WebSockets, at least
        assert paths["queued"] >= count * PER_KIND  # the polling browsers, at least
    else:
        assert paths["direct"] == 0


@pytest.mark.parametrize("compression", [False, True], ids=["compression off", "compression on"])
async def test_a_browser_that_stops_reading_does_not_hold_up_the_others(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory, compression: bool
) -> None:
    # With compression, the browser's backlog drains while its large frames are compressed
    # off the event loop: a time its queue is empty and its transport's buffer is not full.
    proxy, group = await stack(
        backend,
        make_enricher,
        browsers,
        4,
        WEBSOCKET,
        ENRICHER_WEBSOCKET__COMPRESSION=str(compression).lower(),
    )
    await group.pause(0)
    # 15 MB: far more than the stalled browser's TCP buffers hold, so its events back up
    # in enricher and must go the queued way, behind what is already waiting for it.
    count = 150
    await backend.burst(count, [100_000])
    await group.wait_seqs(count, browsers=[1, 2, 3])
    stalled = len(group.seqs(0))
    assert stalled < count, "the paused browser read everything: the test did not stall it"
    paths = await deliveries(proxy)
    assert paths["queued"] > 0  # its backlog waited in enricher, behind its transport

    # More events while its backlog drains: they must queue behind it, not overtake it.
    await group.pause(0, resume=True)
    await backend.burst(count, [100_000], start=count)
    await group.wait_seqs(2 * count)
    for browser in range(4):
        assert_in_order(group, browser, 2 * count)


async def test_a_browser_that_never_reads_again_is_dropped_and_comes_back(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    proxy, group = await stack(
        backend, make_enricher, browsers, 3, WEBSOCKET, ENRICHER_WEBSOCKET__MAX_QUEUED_EVENTS="20"
    )
    await group.pause(0)
    # 15 MB, 20 ms apart: far more than its TCP buffers hold, and a pace the others keep up
    # with (a browser 20 events behind is dropped, reading or not).
    count = 150
    await backend.burst(count, [100_000], interval_ms=20)
    dropped = await proxy.wait_log("browser_dropped")
    assert dropped["reason"] == "backlog" and dropped["queued"] == 20
    await group.wait_seqs(count, browsers=[1, 2])
    for browser in (1, 2):
        assert_in_order(group, browser, count)
    assert (await proxy.metrics())['enricher_browsers_dropped_total{reason="backlog"}'] == 1

    # Once it reads again it finds its connection closed, and socket.io-client reconnects.
    await group.pause(0, resume=True)
    await group.wait_until(
        lambda: any(c["browser"] == 0 and c["connects"] == 2 for c in group.connected_lines()),
        "browser 0 to reconnect",
    )
    got = len(group.seqs(0))
    assert got < count  # what was queued for it went with the connection
    await backend.burst(5, [10], start=count)
    await group.wait_until(lambda: len(group.seqs(0)) >= got + 5, "browser 0 to get new events")
    assert [s["n"] for s in group.seqs(0)][-5:] == list(range(count, count + 5))


async def test_a_backend_event_too_deep_to_decode_still_reaches_every_browser(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    proxy, group = await stack(backend, make_enricher, browsers, 3)
    await backend.emit("test:deep", nest=1500)  # 3,000 levels: beyond orjson and json
    await backend.emit("agent:after", 1)
    await group.wait_all("agent:after", args=[1])
    for browser in range(3):
        got = [e for e in group.events() if e["browser"] == browser]
        assert [e["event"] for e in got[-2:]] == ["test:deep", "agent:after"]  # in order
        assert got[-2]["args"] == [{"depth": 1500, "bottom": "bottom"}]  # as it came
    rejected = await proxy.wait_log("payload_rejected")
    assert rejected["reason"] == "too_deep" and rejected["forwarded"] == "as_it_came"


async def test_a_polling_browser_that_stops_polling_is_dropped_and_comes_back(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    """``websocket.max_queued_events`` bounds a polling browser's queue too. A polling
    browser takes what waits for it once per request, so the burst is paced (100 events
    a second): 100 events within one poll's round trip would drop a browser that polls,
    too."""
    proxy, group = await stack(
        backend,
        make_enricher,
        browsers,
        3,
        ["--transports", "polling"],
        ENRICHER_WEBSOCKET__MAX_QUEUED_EVENTS="100",
    )
    await group.pause(0)  # its poll under way completes; it sends no other
    count = 250
    await backend.burst(count, [100, 3_000], interval_ms=10)
    dropped = await proxy.wait_log("browser_dropped")
    assert dropped["reason"] == "backlog" and dropped["queued"] == 100
    await group.wait_seqs(count, browsers=[1, 2])
    for browser in (1, 2):
        assert_in_order(group, browser, count)
    metrics = await proxy.metrics()
    assert metrics['enricher_browsers_dropped_total{reason="backlog"}'] == 1
    assert metrics["enricher_browsers_connected"] == 2

    # Polling again, it finds its session gone, and socket.io-client reconnects.
    await group.pause(0, resume=True)
    await group.wait_until(
        lambda: any(c["browser"] == 0 and c["connects"] == 2 for c in group.connected_lines()),
        "browser 0 to reconnect",
    )
    got = len(group.seqs(0))
    assert got < count
    await backend.burst(5, [10], start=count)
    await group.wait_until(lambda: len(group.seqs(0)) >= got + 5, "browser 0 to get new events")
    assert [s["n"] for s in group.seqs(0)][-5:] == list(range(count, count + 5))
