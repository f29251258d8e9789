"""Connection state recovery across replicas (``recovery.store: redis``): two real enricher
processes on one real redis-server and the Node backend stub, real socket.io-client browsers
behind a load balancer. A browser cut from one replica that reconnects to the other gets
its session back and every event it missed, once, in order; so do the browsers of a
replica stopped for a rolling update."""

from __future__ import annotations

import asyncio
import time

import pytest

from ..tools import Balancer, RedisServer
from .conftest import (
    Backend,
    Browsers,
    BrowsersFactory,
    EnricherFactory,
    sidebar_check,
)
from .test_recovery import barrier_at, offsets_in_order, received, sessions_kept

# recovery.store redis: replicas sharing one sequence of events, shared mode only
pytestmark = [pytest.mark.e2e, pytest.mark.enricher, pytest.mark.upstream_mode("shared")]


SEQ = 300  # events the backend sends during the rolling update


def events_since(group: Browsers, mark: int, browser: int = 0) -> int:
    """Events one browser of ``group`` received since ``mark`` (its harness's lines)."""
    return sum(
        item.get("type") in ("event", "seq") and item.get("browser") == browser
        for item in group.child.items[mark:]
    )


async def test_browsers_recover_at_another_replica_after_a_blip_and_a_rolling_update(
    backend: Backend,
    make_enricher: EnricherFactory,
    browsers: BrowsersFactory,
    redis_server: RedisServer,
) -> None:
    shared = {
        "ENRICHER_RECOVERY__STORE": "redis",
        "ENRICHER_RECOVERY__REDIS_URL": redis_server.url,
        "ENRICHER_LOG__LEVEL": "debug",
    }
    a = await make_enricher(backend, **shared)
    b = await make_enricher(backend, **shared)
    balancer = Balancer(a.public_port)
    url = f"http://127.0.0.1:{await balancer.start()}"
    try:
        context = [backend.child, a.child, b.child]
        moving = await browsers(url, 5, context=context)  # through the balancer: at a
        staying = await browsers(b.public_url, 1, context=context)  # at b all along
        first = await backend.customer("6281100", "Siti", "before the blip")
        room = first["room_id"]
        await moving.wait_all("new_room_complete", room)
        await staying.wait_all("new_room_complete", room)
        assert (await moving.emit(0, "room:join", {"room_id": room}))["args"][0]["ok"]
        await barrier_at(backend, moving, list(range(5)))
        await barrier_at(backend, staying, [0])
        sids = {i: (await moving.wait_connects(i, 1))["sid"] for i in range(5)}

        # A network blip: three browsers lose their connection to a; when they come back,
        # the balancer sends them to b.
        balancer.port = b.public_port
        mark = len(a.child.items)
        for browser in (0, 1, 2):
            await moving.cut(browser)
        await sessions_kept(a, mark, {sids[0], sids[1], sids[2]})
        gap = len(staying.child.items)
        second = await backend.customer("6281200", None, "during the blip")
        for text in ("still there?", "hello?"):
            await backend.customer("6281100", "Siti", text)
        await backend.agent_reply(room, "yes, here")
        await staying.wait_all("new_room_complete", second["room_id"])
        await barrier_at(backend, staying, [0])
        await barrier_at(backend, moving, [3, 4])
        missed = events_since(staying, gap)
        started = time.perf_counter()
        for browser in (0, 1, 2):
            await moving.cut(browser, reconnect=True)
        for browser in (0, 1, 2):
            line = await moving.wait_connects(browser, 2)
            assert line["recovered"] is True, (browser, line)
            assert line["sid"] == sids[browser]

        # A rolling update: a stops while the backend goes on; its last two browsers
        # reconnect by themselves, through the balancer, to b.
        back_in = time.perf_counter() - started
        gap = len(staying.child.items)
        # browser 3, still at a, opens the second room: only a is in its backend room
        joined = await moving.emit(3, "room:join", {"room_id": second["room_id"]})
        assert joined["args"][0]["ok"]
        await barrier_at(backend, moving, [3, 4])
        # the backend goes on sending all along: 300 test:seq events 5 ms apart
        load = asyncio.create_task(backend.burst(SEQ, [200], interval_ms=5))
        await staying.child.wait_for(
            lambda item: item.get("type") == "seq", "the first test:seq at b", start=gap
        )
        stopping = asyncio.create_task(a.child.stop(timeout=30))
        third = await backend.customer("6281300", "Dewi", "during the update")
        await backend.customer("6281100", "Siti", "and again")
        await backend.customer("6281200", None, "the second room, during the update")
        assert await stopping == 0
        await backend.customer("6281200", None, "the second room, after")
        await load
        for browser in (3, 4):
            line = await moving.wait_connects(browser, 2)
            assert line["recovered"] is True, (browser, line)
            assert line["sid"] == sids[browser]
        await staying.wait_all("new_room_complete", third["room_id"])
        during_update = events_since(staying, gap)
        await backend.emit("test:barrier", {"n": "end"})  # after it, nothing is on its way
        await moving.wait_all("test:barrier", args=[{"n": "end"}])
        await staying.wait_all("test:barrier", args=[{"n": "end"}])

        for group, members in ((moving, range(5)), (staying, [0])):
            for browser in members:
                got = [
                    item["n"]
                    for item in group.child.items
                    if item.get("type") == "seq" and item.get("browser") == browser
                ]
                assert got == list(range(SEQ)), (browser, len(got))
        dump = [*await moving.dump(), *await staying.dump()]
        await sidebar_check(backend, dump)  # REST's truth, each id at most once
        for browser in dump:
            numbers = offsets_in_order(browser)
            assert numbers == sorted(set(numbers)), (browser["browser"], numbers)
        # every browser that moved got exactly what the one at b all along got
        witness = received(dump[5])
        for browser in dump[:5]:
            assert received(browser) == {
                **witness,
                "room:new_message": received(browser)["room:new_message"],
            }, browser["browser"]
        # and the open room's messages after its join, the one it missed included
        messages = await backend.messages(room)
        assert set(received(dump[0])["room:new_message"]) == {
            message["id"] for message in messages[1:]
        }
        # and the second room's, opened at a, through the update
        messages = await backend.messages(second["room_id"])
        assert set(received(dump[3])["room:new_message"]) == {
            message["id"] for message in messages[1:]
        }
        metrics = await b.metrics()
        assert metrics['enricher_recoveries_total{outcome="recovered"}'] == 5
        assert not b.logs("browser_not_recovered")
        print(
            f"\nreliability: 2 replicas on Redis behind a balancer; 3 browsers cut from one "
            f"({missed} events each while away) came back at the other, recovered in "
            f"{back_in:.2f} s; then a rolling update stopped the first ({during_update} events "
            f"meanwhile) and its 2 browsers recovered at the other: 5 of 5 recovered, "
            f"0 lost, 0 duplicated, sidebars equal to REST"
        )
    finally:
        await balancer.close()


async def test_without_redis_no_event_is_lost_and_nobody_recovers_across_the_gap(
    backend: Backend,
    make_enricher: EnricherFactory,
    browsers: BrowsersFactory,
    redis_server: RedisServer,
) -> None:
    password = "pa55-of-the-redis"
    redis_server.require_password(password)
    link = Balancer(redis_server.port)  # enricher reaches Redis through it: a partition
    redis_port = await link.start()
    try:
        proxy = await make_enricher(
            backend,
            ENRICHER_RECOVERY__STORE="redis",
            ENRICHER_RECOVERY__REDIS_URL=f"redis://:{password}@127.0.0.1:{redis_port}/0",
            ENRICHER_LOG__LEVEL="debug",
        )
        group = await browsers(proxy.public_url, 3, context=[backend.child, proxy.child])
        first = await backend.customer("6281400", "Rina", "before")
        await group.wait_all("new_room_complete", first["room_id"])
        await barrier_at(backend, group, [0, 1, 2])
        sid = (await group.wait_connects(0, 1))["sid"]
        mark = len(proxy.child.items)
        await group.cut(0)
        await proxy.child.wait_for(
            lambda item: item.get("event") == "browser_disconnected" and item.get("sid") == sid,
            f"{sid} gone",
            start=mark,
        )

        link.cut()
        during = await backend.customer("6281500", None, "while Redis is away")
        await backend.customer("6281400", "Rina", "still there?")
        await group.wait_all("new_room_complete", during["room_id"], browsers=[1, 2])
        await proxy.wait_log("recovery_store_unavailable", start=mark)
        await barrier_at(backend, group, [1, 2])
        assert (await proxy.metrics())["enricher_recovery_store_up"] == 0

        restored = len(proxy.child.items)
        link.restore()
        await proxy.wait_log("recovery_store_available", start=restored)
        after = await backend.customer("6281600", "Budi", "Redis is back")
        await group.wait_all("new_room_complete", after["room_id"], browsers=[1, 2])
        await barrier_at(backend, group, [1, 2])

        # the browser away across the gap: its session was kept, its missed events were not
        await group.cut(0, reconnect=True)
        line = await group.wait_connects(0, 2)
        assert line["recovered"] is False and line["sid"] != sid
        await group.wait_all("enricher:resync", args=[{"reason": "recovery_failed"}], browsers=[0])
        await barrier_at(backend, group, [0, 1, 2])

        dump = await group.dump()
        await sidebar_check(backend, dump[1:])  # those that stayed: nothing lost, nothing twice
        assert received(dump[1]) == received(dump[2])
        for browser in dump:
            numbers = offsets_in_order(browser)
            assert numbers == sorted(set(numbers)), (browser["browser"], numbers)
        metrics = await proxy.metrics()
        assert metrics["enricher_recovery_store_up"] == 1
        assert metrics["enricher_recovery_store_direct_events_total"] >= 4
        assert metrics['enricher_recoveries_total{outcome="events_dropped"}'] == 1
        assert not [line for line in proxy.child.text if password in line]  # never logged
        direct = metrics["enricher_recovery_store_direct_events_total"]
        print(
            f"\nreliability: Redis partitioned away: {direct:.0f} broadcasts went to browsers "
            f"directly, 0 lost, 0 duplicated; the browser away across the gap got a new "
            f"session and enricher:resync"
        )
    finally:
        await link.close()
