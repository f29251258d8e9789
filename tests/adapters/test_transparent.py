"""Transparent mode between a python-socketio backend and python-socketio browsers: each
browser on a backend connection of its own, made with its own credentials, and nothing of
enricher's own in the backend's eyes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt

from enricher.app import RunningTransparent, running
from enricher.config import load_settings
from enricher.logs import configure_logging

from .conftest import StubBackend
from .test_access import connect

SECRET = "s" * 32


@contextlib.asynccontextmanager
async def transparent(backend: StubBackend, **settings: Any) -> AsyncIterator[RunningTransparent]:
    configure_logging("warning", "console")
    loaded = load_settings(
        None,
        **{
            "upstream.url": backend.url,
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
            **settings,
        },
    )
    assert loaded.upstream.mode in ("transparent", "shared")
    async with running(loaded) as proxy:
        yield proxy


async def test_each_browser_is_its_own_socket_at_the_backend_with_its_own_credentials(
    backend: StubBackend,
) -> None:
    backend.admits = lambda handshake: handshake["auth"] != {"token": "fired-agent"}
    async with transparent(backend) as proxy:
        assert backend.connections.empty()  # no socket of enricher's own
        alice, _ = await connect(proxy, auth={"token": "alice"}, headers={"Cookie": "s=a"})
        bob, _ = await connect(proxy, auth={"token": "bob"})
        assert await alice.sio.call("echo", "from alice", timeout=5) == "from alice"
        await bob.sio.emit("status:set", "away")
        events = [await backend.client_events.get() for _ in range(2)]
        senders = [backend.handshakes[sid]["auth"]["token"] for sid in backend.event_sids]
        assert sorted(zip(events, senders, strict=True)) == [
            (("echo", ("from alice",)), "alice"),
            (("status:set", ("away",)), "bob"),
        ]
        (alice_sid,) = [s for s, h in backend.handshakes.items() if h["cookie"] == "s=a"]
        assert alice.sio.get_sid() == alice_sid  # the browser's id is the backend's
        gauge = proxy.metrics.registry.get_sample_value
        assert gauge("enricher_browser_upstream_connections") == 2

        # the backend's refusal reaches the browser as the backend sent it
        fired, refusal = await connect(proxy, auth={"token": "fired-agent"})
        assert refusal == {"message": "Connection rejected by server"}

        # an event to one browser reaches that browser only
        await backend.sio.emit("private", {"to": "bob"}, to=backend.event_sids[1])
        await backend.sio.emit("everyone", 1)
        assert await bob.next("private", "everyone") == ("private", ({"to": "bob"},))
        assert await alice.next("private", "everyone") == ("everyone", (1,))
        # each with one offset of enricher's (the backend has no recovery of its own)
        assert len(bob.offsets) == 2 and len(alice.offsets) == 1

        await alice.sio.disconnect()
        assert await asyncio.wait_for(backend.disconnections.get(), 5) == alice_sid
        await bob.sio.disconnect()
        await fired.sio.disconnect()


async def test_one_rest_call_per_new_room_however_many_browsers_see_it(
    backend: StubBackend,
) -> None:
    async with transparent(backend, hold_timeout=2.0) as proxy:
        browsers = [(await connect(proxy))[0] for _ in range(30)]
        await backend.new_customer("r1", "62811", "Budi", "halo")
        for browser in browsers:
            _, (snapshot, *_) = await browser.next("new_room_complete")
            assert snapshot["leads_info"]["name"] == "Budi"
            assert snapshot["last_message_text"] == "halo"
        assert backend.rest_paths == [("/rooms/r1", "r1")]
        assert proxy.rooms.requests == 1
        for browser in browsers:
            await browser.sio.disconnect()


async def test_a_browser_whose_token_expires_is_disconnected_and_comes_back_with_a_new_one(
    backend: StubBackend,
) -> None:
    settings = {"auth.mode": "jwt", "auth.jwt": {"secret": SECRET}}
    async with transparent(backend, **settings) as proxy:
        stranger, refusal = await connect(proxy, auth={"token": "not a token"})
        assert refusal == {"message": "unauthorized", "data": {"reason": "token_invalid"}}
        assert backend.connections.empty()  # refused by enricher: never reached the backend
        soon = jwt.encode({"exp": int(time.time()) + 2}, SECRET, algorithm="HS256")
        browser, refusal = await connect(proxy, auth={"token": soon})
        assert refusal is None
        first = await asyncio.wait_for(backend.connections.get(), 5)
        assert await asyncio.wait_for(backend.disconnections.get(), 10) == first
        await browser.sio.disconnect()
        await stranger.sio.disconnect()
