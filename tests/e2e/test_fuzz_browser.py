"""Hypothesis-generated browser input against the real process, in both upstream modes:
a few hundred connections each send what hypothesis draws (engine.io and Socket.IO packets
bent every way, and plain bytes) as WebSocket frames or polling bodies, while canary
browsers must get every backend event, in order, once; afterwards enricher answers, keeps
nothing of them, and logged no error."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import pytest
from hypothesis import strategies as st

from ..tools import drawn
from .conftest import Backend, BrowsersFactory, Enricher, EnricherFactory
from .test_memory import rss

pytestmark = [pytest.mark.e2e, pytest.mark.enricher]

MODES = pytest.mark.parametrize(
    "mode", [pytest.param("shared", marks=pytest.mark.upstream_mode("shared")), "transparent"]
)
CONNECTIONS = 200  # hostile connections, each with the messages drawn for it
EVENTS = 400  # test:seq events the canaries must get meanwhile
AT_ONCE = 20

json_text = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
).map(json.dumps)
namespaces = st.sampled_from(["", "/", "/admin,", "/supervisor,", "/x", "/🙂,", ","])
numbers = st.sampled_from(["", "0", "1", "7", "999999999999999", "1000000", "-1", "01"])
# A Socket.IO packet: its type, attachments, namespace, ack id, JSON, each drawn odd or not
socketio = st.builds(
    lambda kind, count, ns, ack, body: f"{kind}{count}{ns}{ack}{body}",
    st.sampled_from([*"0123456789", "", "x"]),
    st.one_of(st.just(""), numbers.map(lambda n: f"{n}-")),
    namespaces,
    numbers,
    st.one_of(
        json_text,
        json_text.map(lambda j: f'["echo",{j}]'),
        st.sampled_from(['[null,{"a":1}]', '[true,"y"]', "[]", '["connect"]', '["disconnect"]']),
        st.text(max_size=30),
    ),
)
# An engine.io packet, which over WebSocket is one frame
engineio = st.one_of(
    socketio.map(lambda p: "4" + p),
    st.sampled_from(["2", "2probe", "3", "3probe", "5", "6", "1", "0", "", "9", "4"]),
    st.text(max_size=40),
)
frames = st.lists(st.one_of(engineio, st.binary(max_size=300)), max_size=8)
connections = st.tuples(
    st.sampled_from(["websocket", "polling"]),
    st.booleans(),  # whether it connects to "/" first
    frames,
)


async def over_websocket(
    http: aiohttp.ClientSession, proxy: Enricher, connect: bool, messages: list[str | bytes]
) -> None:
    url = f"ws://127.0.0.1:{proxy.public_port}/socket.io/?EIO=4&transport=websocket"
    async with http.ws_connect(url) as ws:
        await ws.receive(timeout=10)  # OPEN
        if connect:
            await ws.send_str("40")
        for message in messages:
            if ws.closed:
                return
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)


async def over_polling(
    http: aiohttp.ClientSession, proxy: Enricher, connect: bool, messages: list[str | bytes]
) -> None:
    base = f"{proxy.public_url}/socket.io/?EIO=4&transport=polling"
    async with http.get(base) as answer:
        opened = await answer.text()
    if not opened.startswith("0{"):
        return
    url = f"{base}&sid={json.loads(opened[1:])['sid']}"
    bodies: list[str | bytes] = [*(["40"] if connect else []), *messages]
    for body in bodies:
        # a polling body is a payload: packets separated by \x1e; binary ones as "b<base64>"
        data = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
        async with http.post(url, data=data) as answer:
            await answer.read()
            if answer.status != 200:
                return
    async with http.post(url, data=b"1") as answer:  # CLOSE
        await answer.read()


@MODES
async def test_any_browser_input_disturbs_no_one_and_leaves_nothing_behind(
    mode: str, backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    hostile = drawn(connections, CONNECTIONS)
    # a client that vanishes is noticed within a ping interval and timeout, and its session
    # kept for its return that long: short ones here
    proxy = await make_enricher(
        backend,
        ENRICHER_PING_INTERVAL="1",
        ENRICHER_PING_TIMEOUT="2",
        ENRICHER_RECOVERY__MAX_DISCONNECTION="3",
    )
    canaries = await browsers(proxy.public_url, 2, [backend.child, proxy.child])
    before, _ = await proxy.per_browser_tables()
    sending = asyncio.create_task(backend.burst(EVENTS, [100, 2000], interval_ms=10))
    slots = asyncio.Semaphore(AT_ONCE)

    async def round_of(connections: list[tuple[str, bool, list[str | bytes]]]) -> int:
        """Run them, wait until nothing is kept for them; enricher's RSS then."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

            async def run(transport: str, connect: bool, messages: list[str | bytes]) -> None:
                async with slots:
                    with contextlib.suppress(aiohttp.ClientError, ConnectionError, TimeoutError):
                        send = over_websocket if transport == "websocket" else over_polling
                        await send(http, proxy, connect, messages)

            await asyncio.gather(*(run(*connection) for connection in connections))
        await proxy.per_browser_tables(lambda tables: tables == before)
        return rss(proxy.child.proc.pid)

    # the first round brings the allocator to its working size; the second may not grow it
    half = len(hostile) // 2
    after_first = await round_of(hostile[:half])
    grown = await round_of(hostile[half:]) - after_first
    assert grown < 32 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB in the second round"

    await sending
    await canaries.wait_seqs(EVENTS)
    for browser in range(2):
        seqs = canaries.seqs(browser)
        assert [s["n"] for s in seqs] == list(range(EVENTS)) and all(s["ok"] for s in seqs)
    assert all(d["connects"] == 1 for d in await canaries.dump())  # never cut off

    errors = [i for i in proxy.child.items if i.get("level") in ("error", "critical")]
    assert not errors, [(e["event"], str(e.get("exception", ""))[-1500:]) for e in errors[:1]]
    text = proxy.child.text
    traceback = next((i for i, line in enumerate(text) if "Traceback" in line), None)
    assert traceback is None, "\n".join(text[max(0, traceback - 2) : traceback + 25])
    late = await browsers(proxy.public_url, 1, [backend.child, proxy.child])  # still admits
    assert (await late.dump())[0]["connected"]
