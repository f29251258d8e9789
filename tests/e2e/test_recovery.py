"""Connection state recovery with real socket.io-client browsers against the real process:
a browser whose connection drops and comes back in time gets its session back and every
event it missed, once, in order; one away too long gets a new session and
``enricher:resync``."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from .conftest import (
    Backend,
    Browsers,
    BrowsersFactory,
    Enricher,
    EnricherFactory,
    Json,
    sidebar_check,
)

pytestmark = [pytest.mark.e2e, pytest.mark.enricher]

_marks = itertools.count(1000)

# In shared mode enricher keeps a session and the backend room its browser joined; in
# transparent mode the browser's own backend connection stays, with that room.
MODES = pytest.mark.parametrize(
    "mode", [pytest.param("shared", marks=pytest.mark.upstream_mode("shared")), "transparent"]
)


async def barrier_at(backend: Backend, group: Browsers, browsers: list[int]) -> None:
    """A ``test:barrier`` upstream, waited for at ``browsers`` only (the others are away)."""
    n = next(_marks)
    await backend.emit("test:barrier", {"n": n})
    await group.wait_all("test:barrier", args=[{"n": n}], browsers=browsers)


async def sessions_kept(proxy: Enricher, mark: int, sids: set[str]) -> None:
    """Until ``proxy`` kept the session of each of ``sids`` (it saw their connection lost),
    by its log lines after ``mark``."""
    kept: set[str] = set()
    await proxy.child.wait_until(
        lambda: (
            kept.update(
                item["sid"]
                for item in proxy.child.items[mark:]
                if item.get("event") == "browser_disconnected" and item.get("recoverable")
            )
            or kept >= sids
        ),
        lambda: f"sessions kept for {sorted(sids - kept)}",
    )


def offsets_in_order(browser: Json) -> list[int]:
    """The event numbers of the offsets one browser received, in the order it got them."""
    numbers = []
    for offset in browser["offsets"]:
        epoch, _, number = offset.partition(".")
        assert len(epoch) == 8 and number.isdigit(), offset
        numbers.append(int(number))
    return numbers


def received(browser: Json) -> dict[str, Any]:
    """What one browser got, by event: the ids and how often, and the other events' args."""
    return {**browser["counts"], "other": browser["other"]}


@MODES
async def test_browsers_cut_off_get_every_event_they_missed_once_in_order(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory, mode: str
) -> None:
    proxy = await make_enricher(backend, ENRICHER_LOG__LEVEL="debug")
    context = [backend.child, proxy.child]
    # socket.io-client's default (polling, then the WebSocket upgrade), and polling only
    upgraded = await browsers(proxy.public_url, 5, context=context)
    polling = await browsers(
        proxy.public_url, 2, context=context, flags=["--transports", "polling"]
    )
    first = await backend.customer("6281100", "Siti", "before the blip")
    room = first["room_id"]
    for group in (upgraded, polling):
        await group.wait_all("new_room_complete", room)
    # browsers 0 (cut) and 4 (not) of the first group have the room open
    for browser in (0, 4):
        assert (await upgraded.emit(browser, "room:join", {"room_id": room}))["args"][0]["ok"]
    await barrier_at(backend, upgraded, list(range(5)))
    await barrier_at(backend, polling, [0, 1])

    cut = {upgraded: [0, 1, 2], polling: [0]}
    mark = len(proxy.child.items)
    sids = {}
    for group, gone in cut.items():
        for browser in gone:
            sids[group, browser] = (await group.wait_connects(browser, 1))["sid"]
            await group.cut(browser)
    await sessions_kept(proxy, mark, set(sids.values()))

    gap = len(upgraded.child.items)
    # meanwhile: a new customer (a new room), messages in the open room, an agent's reply
    second = await backend.customer("6281200", None, "during the blip")
    for text in ("still there?", "hello?"):
        await backend.customer("6281100", "Siti", text)
    await backend.agent_reply(room, "yes, here")
    await upgraded.wait_all("new_room_complete", second["room_id"], browsers=[3, 4])
    await polling.wait_all("new_room_complete", second["room_id"], browsers=[1])
    await barrier_at(backend, upgraded, [3, 4])
    await barrier_at(backend, polling, [1])
    # the room stayed joined for browser 0 (and, in transparent mode, by browser 4's own)
    assert await backend.joined(room) == (1 if mode == "shared" else 2)

    missed = sum(
        item.get("type") in ("event", "seq") and item.get("browser") == 3
        for item in upgraded.child.items[gap:]
    )
    started = time.perf_counter()
    for group, gone in cut.items():
        for browser in gone:
            await group.cut(browser, reconnect=True)
    back = {}
    for group, gone in cut.items():
        for browser in gone:
            back[group, browser] = await group.wait_connects(browser, 2)
    back_in = time.perf_counter() - started
    for (group, browser), line in back.items():
        assert line["recovered"] is True, (browser, line)
        assert line["sid"] == sids[group, browser]  # the same session

    await barrier_at(backend, upgraded, list(range(5)))
    await barrier_at(backend, polling, [0, 1])
    dumps = {upgraded: await upgraded.dump(), polling: await polling.dump()}
    for dump in dumps.values():
        await sidebar_check(backend, dump)  # REST's truth, each id at most once
        for browser in dump:
            numbers = offsets_in_order(browser)
            assert numbers == sorted(set(numbers)), (browser["browser"], numbers)
    # a browser cut off got exactly what one that stayed got
    stayed = received(dumps[upgraded][3])
    for group, gone in cut.items():
        for browser in gone:
            assert received(dumps[group][browser]) == {
                **stayed,
                "room:new_message": received(dumps[group][browser])["room:new_message"],
            }
    # the open room's messages too, to the browser that had it open
    assert (
        dumps[upgraded][0]["counts"]["room:new_message"]
        == (dumps[upgraded][4]["counts"]["room:new_message"])
    )
    assert len(dumps[upgraded][0]["counts"]["room:new_message"]) == 3  # after its join
    metrics = await proxy.metrics()
    assert metrics['enricher_recoveries_total{outcome="recovered"}'] == 4
    assert not any(item.get("event") == "browser_not_recovered" for item in proxy.child.items)
    print(
        f"\nreliability: 4 of 7 browsers cut off (3 upgraded to WebSocket, 1 polling), "
        f"{missed} events each while away, all 4 recovered in {back_in:.2f} s of their "
        f"reconnection, 0 lost, 0 duplicated, sidebars equal to REST"
    )


@MODES
async def test_a_browser_away_longer_than_the_window_gets_a_new_session_and_resync(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory, mode: str
) -> None:
    proxy = await make_enricher(
        backend, ENRICHER_LOG__LEVEL="debug", ENRICHER_RECOVERY__MAX_DISCONNECTION="1"
    )
    group = await browsers(proxy.public_url, 2, context=[backend.child, proxy.child])
    first = await backend.customer("6281300", "Dewi", "before")
    room = first["room_id"]
    await group.wait_all("new_room_complete", room)
    assert (await group.emit(0, "room:join", {"room_id": room}))["args"][0]["ok"]
    await barrier_at(backend, group, [0, 1])
    assert await backend.joined(room) == 1
    sid = (await group.wait_connects(0, 1))["sid"]

    mark = len(proxy.child.items)
    await group.cut(0)
    await backend.customer("6281300", "Dewi", "while away")
    await proxy.child.wait_for(
        lambda item: item.get("event") == "browser_session_expired" and item.get("sid") == sid,
        f"the session of {sid} expired",
        start=mark,
    )
    # its backend room let go of (asked right after that line: a few round trips)
    joined = await backend.joined(room)
    for _ in range(50):
        if joined == 0:
            break
        await barrier_at(backend, group, [1])
        joined = await backend.joined(room)
    assert joined == 0

    await group.cut(0, reconnect=True)
    line = await group.wait_connects(0, 2)
    assert line["recovered"] is False and line["sid"] != sid
    resync = [{"reason": "recovery_failed"}]
    await group.wait_all("enricher:resync", args=resync, browsers=[0])
    assert group.who_got("enricher:resync") == {0}  # that browser only
    metrics = await proxy.metrics()
    assert metrics['enricher_recoveries_total{outcome="unknown_session"}'] == 1
    assert metrics['enricher_resyncs_total{reason="recovery_failed"}'] == 1
    log = await proxy.wait_log("browser_not_recovered", start=mark)
    assert log["reason"] == "unknown_session"
