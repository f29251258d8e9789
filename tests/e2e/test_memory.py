"""10,000 browsers connecting and leaving in waves against the real process: its memory
is flat after warm-up, and every table kept per browser is empty again."""

from __future__ import annotations

import time

import pytest

from ..support.processes import proc_rss_kib
from .conftest import Backend, BrowsersFactory, Enricher, EnricherFactory, barrier

pytestmark = [pytest.mark.e2e, pytest.mark.enricher]

WAVES = 20
PER_WAVE = 500  # websocket browsers at once
WARM_UP = 4  # waves before the baseline: allocator arenas and caches settle
JOINING = 50  # browsers of each wave that also join a room (membership, rate buckets)
# RSS may grow this much from the baseline (after WARM_UP waves) to the end, with 8,000
# browsers come and gone in between: a leak of 800 bytes per browser would exceed it. Below
# that, what moves RSS is the allocator (arenas kept or given back), not enricher's tables.
TOLERANCE = 6 * 1024 * 1024


def rss(pid: int) -> int:
    """The resident set size of a running process, in bytes."""
    kib = proc_rss_kib(pid)
    assert kib is not None, f"no VmRSS for pid {pid}"
    return kib * 1024


async def tables_empty(proxy: Enricher) -> dict[str, float]:
    """Wait until no table kept per browser has an entry; the metrics then."""
    _, metrics = await proxy.per_browser_tables(lambda tables: not any(tables.values()))
    return metrics


@pytest.mark.parametrize(
    "mode", [pytest.param("shared", marks=pytest.mark.upstream_mode("shared")), "transparent"]
)
async def test_ten_thousand_browsers_in_waves_leave_nothing_behind(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory, mode: str
) -> None:
    # python-engineio keeps a closed connection until its next heartbeat was due: with
    # the default 25 s the end would count the last 25 s of browsers, with 1 s the last one.
    # Browsers that leave without a goodbye may come back: their sessions are kept 1 s.
    proxy = await make_enricher(
        backend,
        ENRICHER_LOG__LEVEL="debug",
        ENRICHER_PING_INTERVAL="1",
        ENRICHER_RECOVERY__MAX_DISCONNECTION="1",
    )
    pid = proxy.child.proc.pid
    started = time.perf_counter()
    samples: list[int] = []
    baseline = 0
    connected = 0
    disconnects = {"read": 0, "count": 0}

    def gone() -> int:
        """browser_disconnected lines so far (read once each: there are 10,000)."""
        items = proxy.child.items
        for item in items[disconnects["read"] :]:
            disconnects["count"] += item.get("event") == "browser_disconnected"
        disconnects["read"] = len(items)
        return disconnects["count"]

    for wave in range(WAVES):
        group = await browsers(
            proxy.public_url,
            PER_WAVE,
            context=[backend.child, proxy.child],
            flags=["--transports", "websocket"],
        )
        connected += PER_WAVE
        for browser in range(JOINING):
            room = {"room_id": f"room-{browser % 10}"}
            assert (await group.emit(browser, "room:join", room))["args"][0]["ok"]
        await barrier(backend, group, timeout=30)  # a broadcast to every browser
        await group.close()
        await proxy.child.wait_until(
            lambda want=connected: gone() >= want,
            lambda want=connected: f"{want} browsers gone ({gone()})",
            timeout=30,
        )
        if wave == WARM_UP - 1:
            await tables_empty(proxy)
            baseline = rss(pid)
        samples.append(rss(pid))
    elapsed = time.perf_counter() - started

    metrics = await tables_empty(proxy)
    end = rss(pid)
    assert metrics["enricher_browsers_connected"] == 0
    assert await backend.joined("room-0") == 0  # nobody is left in the backend's rooms
    mib = [round(s / 2**20, 1) for s in samples]
    print(
        f"\n{connected} browsers in {elapsed:.0f} s; RSS (MiB) {baseline / 2**20:.1f} after "
        f"{WARM_UP} waves, {end / 2**20:.1f} at the end; by wave: {mib}"
    )
    assert end - baseline <= TOLERANCE, f"RSS grew {(end - baseline) / 2**20:.1f} MiB: {mib}"
