"""A hostile browser next to real ones, in both upstream modes: each of its bad packets
gets its error (in its ack, or its connection closed), a log line without traceback and a
metric, while canary browsers get every backend event and the backend sees none of it."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import aiohttp
import pytest

from .conftest import Backend, BrowsersFactory, Enricher, EnricherFactory

pytestmark = [pytest.mark.e2e, pytest.mark.enricher]

MODES = pytest.mark.parametrize(
    "mode", [pytest.param("shared", marks=pytest.mark.upstream_mode("shared")), "transparent"]
)
EVENTS = 300  # test:seq events the backend sends while the probes run


async def hostile(http: aiohttp.ClientSession, proxy: Enricher) -> aiohttp.ClientWebSocketResponse:
    """A browser speaking engine.io by hand, connected to namespace ``/``."""
    ws = await http.ws_connect(
        f"ws://127.0.0.1:{proxy.public_port}/socket.io/?EIO=4&transport=websocket"
    )
    assert (await ws.receive_str()).startswith("0{")
    await ws.send_str("40")
    while not (await ws.receive_str()).startswith("40{"):
        pass
    return ws


async def answers(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[str]:
    """The next ``count`` acks it gets (the broadcasts in between left out)."""
    got: list[str] = []
    while len(got) < count:
        message = await ws.receive_str(timeout=10)
        if message.startswith("43"):
            got.append(message)
    return got


async def closed(ws: aiohttp.ClientWebSocketResponse) -> list[str]:
    """What it gets until its connection is closed (within 10 s)."""
    got: list[str] = []
    async with asyncio.timeout(10):
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                got.append(message.data)
    return got


@MODES
async def test_bad_packets_from_one_browser_disturb_no_one(
    mode: str, backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    proxy = await make_enricher(backend)
    canaries = await browsers(proxy.public_url, 2, [backend.child, proxy.child])
    async with aiohttp.ClientSession() as http:
        names = await hostile(http, proxy)
        bomb = await hostile(http, proxy)
        upload = await hostile(http, proxy)
        seen_before = await backend.connections()
        sending = asyncio.create_task(backend.burst(EVENTS, [200], interval_ms=5))

        # 1. event names that are no string, and packets no event: 32 of them
        for n in range(15):
            await names.send_str(f'42{n}[null,{{"a":1}}]')
            await names.send_str('42[true,"y"]')
        await names.send_str('42[{"a":1}]')
        await names.send_str("4not a packet")
        await names.send_str('42["typing",{"room_id":"r1"}]')  # and the socket goes on
        assert await answers(names, 15) == [
            f'43{n}[{{"error":"event_invalid","event":"other"}}]' for n in range(15)
        ]

        # 2. a binary packet announcing a million attachments: closed at its header
        await bomb.send_str('451000000-3["x",{"_placeholder":true,"num":0}]')
        for _ in range(3):  # what would have followed, if anything still reads it
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                await bomb.send_bytes(b"\0" * 900_000)
        assert '433[{"error":"attachments_too_many","event":"x"}]' in await closed(bomb)

        # 3. attachments that together pass the payload limit: closed at the one past it
        await upload.send_str(
            '452-7["upload",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
        )
        await upload.send_bytes(b"\1" * 600_000)
        await upload.send_bytes(b"\2" * 600_000)
        assert '437[{"error":"attachments_too_large","event":"upload"}]' in await closed(upload)

        await sending
        await canaries.wait_seqs(EVENTS)
        for browser in range(2):
            assert [s["n"] for s in canaries.seqs(browser)] == list(range(EVENTS))
            assert all(s["ok"] for s in canaries.seqs(browser))
        await names.close()

    # the backend saw no event of theirs but the one valid one, and, in shared mode, its
    # one connection from enricher all along
    await backend.child.wait_for(
        lambda item: item.get("event") == "client_event", "the typing event at the backend"
    )
    assert [e["event"] for e in await backend.client_events()] == ["typing"]
    total, _ = await backend.connections()
    assert total == seen_before[0]
    metrics = await proxy.metrics()
    refused = 'enricher_client_events_total{event="other",outcome="%s"}'
    assert metrics[refused % "event_invalid"] == 31
    assert metrics[refused % "not_a_packet"] == 1
    assert metrics[refused % "attachments_too_many"] == 1  # names outside the seed's: "other"
    assert metrics[refused % "attachments_too_large"] == 1
    logged = Counter(
        i["reason"] for i in proxy.child.items if i.get("event") == "client_event_refused"
    )
    assert logged == {
        "event_invalid": 31,
        "not_a_packet": 1,
        "attachments_too_many": 1,
        "attachments_too_large": 1,
    }
    assert not [i for i in proxy.child.items if "exception" in i or i.get("level") == "error"]
