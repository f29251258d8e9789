"""engine.io's heartbeat between enricher and each browser: enricher pings every
``ping_interval``; a browser that answers stays however long it is idle, one that stops
answering is disconnected after ``ping_timeout``. In both modes, on a raw WebSocket (the
packets as a browser's engine.io sees them)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from enricher.shared_mode import Running
from enricher.transparent_mode import RunningTransparent

from .conftest import StubBackend
from .test_transparent import transparent

INTERVAL, TIMEOUT = 0.2, 0.3


async def next_text(ws: aiohttp.ClientWebSocketResponse) -> str | None:
    """The next text frame, None once the connection is closed."""
    message = await asyncio.wait_for(ws.receive(), 5)
    return message.data if message.type == aiohttp.WSMsgType.TEXT else None


@pytest.mark.parametrize("mode", ["shared", "transparent"])
async def test_a_browser_answering_pings_stays_and_one_that_stops_is_disconnected(
    mode: str, backend: StubBackend
) -> None:
    settings = {"upstream.mode": mode, "ping_interval": INTERVAL, "ping_timeout": TIMEOUT}
    async with transparent(backend, **settings) as proxy, aiohttp.ClientSession() as http:
        assert isinstance(proxy, Running | RunningTransparent)
        url = f"ws://127.0.0.1:{proxy.public_port}/socket.io/?EIO=4&transport=websocket"
        async with http.ws_connect(url) as ws:
            opened = await next_text(ws)
            assert opened is not None and opened.startswith("0")
            await ws.send_str("40")
            connected = await next_text(ws)
            assert connected is not None and connected.startswith("40")
            loop = asyncio.get_running_loop()
            started = loop.time()
            for _ in range(4):  # idle for longer than an interval and a timeout
                assert await next_text(ws) == "2"
                await ws.send_str("3")
            assert loop.time() - started > INTERVAL + TIMEOUT
            assert await next_text(ws) == "2"  # not answered
            unanswered = loop.time()
            ended = [await next_text(ws) for _ in range(2)]
            assert None in ended and set(ended) <= {"1", None}  # a CLOSE packet, then closed
            assert loop.time() - unanswered > TIMEOUT / 2  # given its time to answer
