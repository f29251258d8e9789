"""Connection state recovery on the browsers' side, in-process: what a returning browser
presents, odd or not, and binary events kept and given back with their attachments."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from enricher.access import Admission
from enricher.shared_mode import Running

from .conftest import BrowserClient, StubBackend


async def connect(proxy: Running, auth: Any) -> BrowserClient:
    browser = BrowserClient()
    await browser.sio.connect(
        f"http://127.0.0.1:{proxy.public_port}", transports=["websocket"], auth=auth
    )
    return browser


async def lose_connection(proxy: Running, browser: BrowserClient) -> str:
    """Cut ``browser``'s connection without a DISCONNECT packet (a network loss) and wait
    until enricher has kept its session; the session's pid."""
    sid = browser.sio.get_sid()
    pid: str = proxy.downstream.sio.pids[sid][0]
    recovery = proxy.downstream.recovery
    assert recovery is not None
    kept = asyncio.Event()
    leave = recovery.leave

    def left(*args: Any) -> None:
        leave(*args)
        kept.set()

    recovery.leave = left  # type: ignore[method-assign]
    await browser.sio.eio.disconnect(abort=True)
    await asyncio.wait_for(kept.wait(), 5)
    return pid


@pytest.mark.parametrize(
    "auth",
    [
        {"pid": "no-such-session", "offset": "0123abcd.7"},
        {"pid": ["not", "a", "string"], "offset": {"odd": True}},
        {"pid": None},
        {"pid": {"nested": [1]}, "offset": 10**30},
        {"pid": "", "offset": ".."},
    ],
)
async def test_an_odd_or_unknown_session_gets_a_new_one_and_resync(
    proxy: Running, auth: Any
) -> None:
    browser = await connect(proxy, auth)
    try:
        assert await browser.next("enricher:resync") == (
            "enricher:resync",
            ({"reason": "recovery_failed"},),
        )
        assert browser.sio.connected
        sid = browser.sio.get_sid()
        assert sid in proxy.downstream.sio.pids  # a session, with a pid of its own
        assert proxy.downstream.sio.pids[sid][0] != auth.get("pid")
    finally:
        await browser.sio.disconnect()
    metrics = proxy.metrics.registry.get_sample_value
    assert metrics("enricher_recoveries_total", {"outcome": "unknown_session"}) == 1


async def test_binary_events_missed_come_back_with_their_attachments(
    backend: StubBackend, proxy: Running, browsers: Any
) -> None:
    (browser,) = await browsers(1)
    await backend.sio.emit("blob", {"bytes": b"\x00\x01"})
    assert await browser.next("blob") == ("blob", ({"bytes": b"\x00\x01"},))
    seen = browser.offsets[-1]
    sid = browser.sio.get_sid()
    pid = await lose_connection(proxy, browser)

    other = await connect(proxy, None)
    await backend.sio.emit("blob", {"bytes": b"\xff", "n": 2})
    await backend.sio.emit("text", "while away")
    await backend.sio.emit("test:barrier", 1)
    await other.next("test:barrier")  # the events have gone out: now it comes back
    back = await connect(proxy, {"pid": pid, "offset": seen})
    try:
        assert back.sio.get_sid() == sid
        assert await back.next() == ("blob", ({"bytes": b"\xff", "n": 2},))
        assert await back.next() == ("text", ("while away",))
        assert await back.next() == ("test:barrier", (1,))
        numbers = [_number(offset) for offset in back.offsets]
        assert numbers[0] > _number(seen) and numbers == sorted(set(numbers))
    finally:
        await back.sio.disconnect()
        await other.sio.disconnect()
    metrics = proxy.metrics.registry.get_sample_value
    assert metrics("enricher_recoveries_total", {"outcome": "recovered"}) == 1


def _number(offset: str) -> int:
    return int(offset.partition(".")[2])


@pytest.mark.parametrize("how", ["leaves", "credentials_expired", "dropped", "malformed", "lost"])
async def test_only_a_lost_connection_is_kept_for_recovery(
    backend: StubBackend, proxy: Running, browsers: Any, how: str
) -> None:
    """socket.disconnect() (DISCONNECT packet), and enricher's own closes (credentials
    expired, dropped for its backlog, a packet it cannot take: socket.io's server keeps no
    session after a parse error either) end the session; a lost connection keeps it, with
    the backend room it joined."""
    (browser,) = await browsers(1)
    assert (await browser.sio.call("room:join", {"room_id": "r1"}, timeout=5))["ok"]
    assert await backend.client_events.get() == ("room:join", ({"room_id": "r1"},))
    downstream = proxy.downstream
    recovery = downstream.recovery
    assert recovery is not None
    sid = browser.sio.get_sid()
    manager = downstream.sio.manager
    eio_sid = manager.eio_sid_from_sid(sid, "/")
    gone = asyncio.Event()
    browser.sio.on("disconnect", lambda reason=None: gone.set())
    if how == "leaves":
        await browser.sio.disconnect()
    elif how == "credentials_expired":
        await downstream._lapse(sid, Admission(expires_at=0.0))  # a token's exp, passed
    elif how == "dropped":
        await manager._drop(sid, eio_sid, downstream.sio.eio.sockets[eio_sid])
    elif how == "malformed":
        await browser.sio.eio.send('50-["x"]')  # a binary event with no attachments
    else:
        await browser.sio.eio.disconnect(abort=True)
    await asyncio.wait_for(gone.wait(), 5)
    if how == "lost":
        while manager.eio_sid_from_sid(sid, "/") is not None:  # the server's side of it
            await asyncio.wait_for(backend.sio.emit("test:tick"), 5)
        assert [s.sid for s in recovery.sessions.values()] == [sid]
        assert downstream.backend_rooms.membership.rooms() == ["r1"]  # still in the backend's room
    else:
        # the backend room let go of: nothing kept for it
        assert await asyncio.wait_for(backend.client_events.get(), 5) == (
            "room:leave",
            ({"room_id": "r1"},),
        )
        assert recovery.sessions == {}
    sizes = downstream.sizes()
    assert sizes["browser_pids"] == 0 and sizes["browser_unrecoverable"] == 0


@pytest.mark.parametrize("proxy_settings", [{"websocket.max_queued_events": 6}])
async def test_a_browser_that_missed_more_than_its_queue_holds_refetches(
    backend: StubBackend, proxy: Running, browsers: Any
) -> None:
    """A replay bigger than half the browser's queue limit would get it dropped by the
    first live event: it gets a new session and enricher:resync instead."""
    (browser,) = await browsers(1)
    await backend.sio.emit("seen", 0)
    await browser.next("seen")
    seen, sid = browser.offsets[-1], browser.sio.get_sid()
    pid = await lose_connection(proxy, browser)
    other = await connect(proxy, None)
    for n in range(4):  # more than 6 // 2
        await backend.sio.emit("missed", n)
    for _ in range(4):
        await other.next("missed")
    back = await connect(proxy, {"pid": pid, "offset": seen})
    try:
        assert await back.next("enricher:resync") == (
            "enricher:resync",
            ({"reason": "recovery_failed"},),
        )
        assert back.sio.get_sid() != sid and back.sio.connected
    finally:
        await back.sio.disconnect()
        await other.sio.disconnect()
    metrics = proxy.metrics.registry.get_sample_value
    assert metrics("enricher_recoveries_total", {"outcome": "too_many_missed"}) == 1
    assert proxy.downstream.sizes()["browser_backend_rooms"] == 0
