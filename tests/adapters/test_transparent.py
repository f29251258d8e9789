"""Transparent mode between a python-socketio backend and python-socketio browsers: each
browser on a backend connection of its own, made with its own credentials, and nothing of
enricher's own in the backend's eyes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt

from enricher.app import running
from enricher.config import load_settings
from enricher.logs import configure_logging
from enricher.transparent_mode import RunningTransparent

from ..support.network import cut
from ..tools import until
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


async def test_an_event_whose_name_cannot_be_read_is_refused_not_forwarded(
    backend: StubBackend,
) -> None:
    """A hand-made packet a Node server may still read as an event (a space before the
    array) is checked like any other: with an allow-list, it never reaches the backend."""
    async with (
        transparent(backend, client_events=["echo"]) as proxy,
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"ws://127.0.0.1:{proxy.public_port}/socket.io/?EIO=4&transport=websocket"
        ) as ws,
    ):
        assert (await ws.receive_str()).startswith("0{")  # engine.io OPEN
        await ws.send_str("40")
        assert (await ws.receive_str()).startswith("40{")  # the backend's CONNECT answer
        await ws.send_str('421 ["forbidden"]')
        await ws.send_str("4not a packet")  # an engine.io message, no Socket.IO packet
        await ws.send_str('422["echo","ok"]')
        answers = [await ws.receive_str() for _ in range(2)]
        assert answers[0] == '431[{"error":"event_invalid","event":"other"}]'
        assert answers[1] == '432["ok"]'
        assert await backend.client_events.get() == ("echo", ("ok",))
        assert backend.client_events.empty()


async def test_a_kept_session_the_backend_ended_is_not_given_back(backend: StubBackend) -> None:
    """A browser away while the backend ends its socket: its session is gone, and the
    browser coming back with its pid gets a new session and enricher:resync, not a dead one."""
    url = "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket"
    async with transparent(backend) as proxy, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url.format(proxy.public_port))
        await ws.receive_str()  # engine.io OPEN
        await ws.send_str("40")
        answer = json.loads((await ws.receive_str())[2:])
        sid = await asyncio.wait_for(backend.connections.get(), 5)
        assert answer["sid"] == sid and answer["pid"].startswith("enricher.")
        await ws.close()  # lost, without a DISCONNECT: kept for its return
        await asyncio.wait_for(until(lambda: answer["pid"] in proxy.relay.kept), 5)
        await backend.sio.disconnect(sid)  # the backend ends it meanwhile
        await asyncio.wait_for(until(lambda: not proxy.relay.kept), 5)

        ws = await http.ws_connect(url.format(proxy.public_port))
        await ws.receive_str()
        offset = f"{proxy.relay.epoch}.0"
        await ws.send_str("40" + json.dumps({"pid": answer["pid"], "offset": offset}))
        again = json.loads((await ws.receive_str())[2:])
        assert again["sid"] != sid and again["pid"] != answer["pid"]
        assert (await ws.receive_str()).startswith('42["enricher:resync"')
        await ws.close()


async def test_a_closed_tab_leaves_at_once_a_lost_connection_is_kept(
    backend: StubBackend,
) -> None:
    """A page being left closes its WebSocket with 1001 (going away): the backend sees the
    agent leave at once. A connection lost without a close frame (the network, a sleeping
    laptop) keeps its backend connection for the browser's return."""
    url = "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket"
    async with transparent(backend) as proxy, aiohttp.ClientSession() as http:
        sids = []
        for _ in range(2):
            ws = await http.ws_connect(url.format(proxy.public_port))
            await ws.receive_str()  # engine.io OPEN
            await ws.send_str("40")
            await ws.receive_str()  # the backend's CONNECT answer
            sids.append((ws, await asyncio.wait_for(backend.connections.get(), 5)))
        (closing, closing_sid), (lost, lost_sid) = sids
        await closing.close(code=aiohttp.WSCloseCode.GOING_AWAY)
        assert await asyncio.wait_for(backend.disconnections.get(), 5) == closing_sid
        cut(lost)  # no close frame
        await asyncio.wait_for(until(lambda: len(proxy.relay.kept) == 1), 5)
        (kept,) = proxy.relay.kept.values()
        assert kept.sid == lost_sid
        assert backend.disconnections.empty()  # the lost one's backend socket stays
        await lost.close()


async def test_answers_name_no_software_version(backend: StubBackend) -> None:
    """aiohttp's default Server header names itself and its version."""
    async with transparent(backend) as proxy, aiohttp.ClientSession() as http:
        for url in (
            f"http://127.0.0.1:{proxy.admin_port}/healthz",
            f"http://127.0.0.1:{proxy.public_port}/socket.io/?EIO=4&transport=polling",
            f"http://127.0.0.1:{proxy.public_port}/socket.io/?EIO=9&transport=polling",
        ):
            async with http.get(url) as answer:
                assert answer.headers["Server"] == "enricher", url
