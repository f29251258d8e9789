"""Browsers whose connection is lost without a close frame (a network gone, a laptop shut),
in shared mode: aiohttp cancels a WebSocket's handler when its client leaves, and nothing of
the browser is left behind, at once (not a heartbeat later), whatever it was doing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web

from enricher.shared_mode import Running

from ..support.network import cut
from ..tools import until
from .conftest import StubBackend
from .test_access import backend_auth, endpoint, proxy_for

URL = "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket"


def browser_tables(proxy: Running) -> dict[str, int]:
    """What enricher keeps of its browsers (not the sessions kept for their return)."""
    return {k: v for k, v in proxy.downstream.sizes().items() if k.startswith("browser_")}


async def test_a_lost_websocket_leaves_nothing_behind_and_gives_its_connection_back(
    backend: StubBackend,
) -> None:
    """One connection per client allowed: the one lost is given back, so the browser's
    return is let in."""
    async with (
        proxy_for(backend, max_connections_per_client=1) as proxy,
        aiohttp.ClientSession() as http,
    ):
        left = browser_tables(proxy)
        for _ in range(2):
            ws = await http.ws_connect(URL.format(proxy.public_port))
            assert (await ws.receive_str()).startswith("0")  # engine.io OPEN
            await ws.send_str("40")
            assert (await asyncio.wait_for(ws.receive_str(), 5)).startswith("40")
            assert browser_tables(proxy) != left
            cut(ws)
            await asyncio.wait_for(until(lambda: browser_tables(proxy) == left), 5)
        assert proxy.downstream.sizes()["recovery_sessions"] == 2  # kept for their return


async def test_a_websocket_lost_while_its_credentials_are_checked_leaves_nothing_behind(
    backend: StubBackend, aiohttp_server: Any
) -> None:
    """The check is not abandoned halfway (cancelled, a session could be left half made):
    its answer is taken, the browser admitted, then ended as any browser that left."""
    asked, answer = asyncio.Event(), asyncio.Event()
    abandoned: list[bool] = []

    async def check(request: web.Request) -> web.Response:
        asked.set()
        await answer.wait()
        abandoned.append(request.transport is None or request.transport.is_closing())
        return web.Response(status=204)

    url, _ = await endpoint(aiohttp_server, "/auth", check)
    async with proxy_for(backend, **backend_auth(url)) as proxy, aiohttp.ClientSession() as http:
        left = browser_tables(proxy)
        admitted = lambda: proxy.metrics.registry.get_sample_value(  # noqa: E731
            "enricher_browser_admissions_total", {"outcome": "admitted"}
        )
        ws = await http.ws_connect(URL.format(proxy.public_port), headers={"Cookie": "s=1"})
        assert (await ws.receive_str()).startswith("0")
        await ws.send_str("40")
        await asyncio.wait_for(asked.wait(), 5)
        (served,) = proxy.downstream._websockets.values()
        cut(ws)
        await asyncio.wait_for(until(served.transport.is_closing), 5)  # enricher saw it
        answer.set()
        await asyncio.wait_for(until(lambda: browser_tables(proxy) == left), 5)
        assert abandoned == [False]
        assert admitted() == 1
        assert proxy.metrics.registry.get_sample_value("enricher_browsers_connected") == 0


async def test_an_upgrade_completed_after_its_socket_closed_is_closed_too(
    backend: StubBackend,
) -> None:
    """A browser upgrading from polling stops answering pings after its probe: its socket
    is closed by the heartbeat, then its UPGRADE arrives. The WebSocket is closed as well
    (left open it would have no socket, no pings, and hold its connection)."""
    settings = {"ping_interval": 0.2, "ping_timeout": 0.3}
    async with proxy_for(backend, **settings) as proxy, aiohttp.ClientSession() as http:
        left = browser_tables(proxy)
        connected = lambda: proxy.metrics.registry.get_sample_value(  # noqa: E731
            "enricher_browsers_connected"
        )
        polling = f"http://127.0.0.1:{proxy.public_port}/socket.io/?EIO=4&transport=polling"
        async with http.get(polling) as opened:
            sid = json.loads((await opened.text())[1:])["sid"]
        polling += f"&sid={sid}"
        async with http.post(polling, data="40") as posted:
            assert posted.status == 200
        async with http.get(polling) as answered:
            assert (await answered.text()).startswith("40")
        ws = await http.ws_connect(URL.format(proxy.public_port) + f"&sid={sid}")
        await ws.send_str("2probe")
        assert await asyncio.wait_for(ws.receive_str(), 5) == "3probe"
        assert connected() == 1

        await asyncio.wait_for(until(lambda: connected() == 0), 5)  # pings not answered
        await ws.send_str("5")  # the browser's UPGRADE, late
        texts = await asyncio.wait_for(texts_until_closed(ws), 5)
        assert set(texts) <= {"1"}  # at most the CLOSE packet: nothing after it
        await asyncio.wait_for(until(lambda: browser_tables(proxy) == left), 5)


async def texts_until_closed(ws: aiohttp.ClientWebSocketResponse) -> list[str]:
    texts = []
    async for message in ws:
        texts.append(message.data)
    return texts
