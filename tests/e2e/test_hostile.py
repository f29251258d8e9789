"""A hostile browser next to real ones, in both upstream modes: each of its bad packets
gets its error (in its ack, or its connection closed), a log line without traceback and a
metric, while canary browsers get every backend event and the backend sees none of it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter

import aiohttp
import jwt
import pytest

from enricher.refusals import LOG_BURST

from .conftest import Backend, BrowsersFactory, Enricher, EnricherFactory
from .test_passthrough import slow_upload
from .test_security import JWT_ENV, SECRET, auth_flag, token

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
        assert await answers(bomb, 1) == ['433[{"error":"attachments_too_many","event":"x"}]']
        for _ in range(3):  # what would have followed, if anything still reads it
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                await bomb.send_bytes(b"\0" * 900_000)
        await closed(bomb)  # (what it sends after its close is reset: the ack is read first)

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
    assert logged["attachments_too_many"] == logged["attachments_too_large"] == 1
    # the 32 refusals of one browser within seconds: its first lines, not all of them
    assert LOG_BURST <= logged["event_invalid"] + logged["not_a_packet"] < 32
    assert not [i for i in proxy.child.items if "exception" in i or i.get("level") == "error"]


TRUSTED_PROXY = "127.0.0.2"  # a proxy in front: its X-Forwarded-Host/-Proto are believed


async def handshake(
    http: aiohttp.ClientSession, proxy: Enricher, transport: str, headers: dict[str, str]
) -> aiohttp.ClientWebSocketResponse | str | int:
    """A new engine.io connection: its WebSocket, or a polling session's id; else the
    status it was refused with."""
    url = f"127.0.0.1:{proxy.public_port}/socket.io/?EIO=4&transport={transport}"
    if transport == "websocket":
        try:
            ws = await http.ws_connect("ws://" + url, headers=headers)
        except aiohttp.WSServerHandshakeError as refused:
            return refused.status
        assert (await ws.receive_str(timeout=10)).startswith("0{")
        return ws
    async with http.get("http://" + url, headers=headers) as answer:
        if answer.status != 200:
            assert await answer.json() == {"code": 4, "message": "Forbidden"}
            return answer.status
        opened = json.loads((await answer.text())[1:])
        return str(opened["sid"])


async def admitted(proxy: Enricher, transport: str, headers: dict[str, str], peer: str) -> bool:
    """Whether a handshake with these headers, from this address, is admitted; a page
    refused learns nothing of enricher's answers (no CORS header)."""
    connector = aiohttp.TCPConnector(local_addr=(peer, 0))
    url = f"127.0.0.1:{proxy.public_port}/socket.io/?EIO=4&transport={transport}"
    async with aiohttp.ClientSession(connector=connector) as http:
        if transport == "websocket":
            ws = await handshake(http, proxy, transport, headers)
            if isinstance(ws, int):
                assert ws == 400
                return False
            assert isinstance(ws, aiohttp.ClientWebSocketResponse)
            await ws.close()
            return True
        async with http.get("http://" + url, headers=headers) as answer:
            body = await answer.text()
            allowed = answer.headers.get("Access-Control-Allow-Origin")
            if answer.status == 400:
                assert allowed is None and "not an accepted origin" in body
                return False
            assert answer.status == 200 and body.startswith("0{")
            assert allowed == headers.get("Origin", allowed)
            return True


@MODES
async def test_pages_connect_only_from_allowed_origins_whatever_their_host_says(
    mode: str, backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    proxy = await make_enricher(
        backend,
        ENRICHER_CORS_ORIGINS='["https://chat.example.com"]',
        ENRICHER_HTTP__TRUSTED_PROXIES=f'["{TRUSTED_PROXY}/32"]',
    )
    port = proxy.public_port
    anyone = "127.0.0.1"
    probes = [
        # (what, its headers, from where, admitted)
        ("no page (no Origin)", {}, anyone, True),
        ("enricher's own origin, by address", {"Origin": f"http://127.0.0.1:{port}"}, anyone, True),
        (
            "enricher's own origin, as localhost",
            {"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"},
            anyone,
            True,
        ),
        ("a listed origin", {"Origin": "https://chat.example.com"}, anyone, True),
        (
            "a name pointed at enricher (DNS rebinding)",
            {"Origin": f"http://evil.example:{port}", "Host": f"evil.example:{port}"},
            anyone,
            False,
        ),
        (
            "anyone's X-Forwarded-Host",
            {"Origin": "http://evil.example", "X-Forwarded-Host": "evil.example"},
            anyone,
            False,
        ),
        (
            "anyone's X-Forwarded-Proto",
            {"Origin": f"https://127.0.0.1:{port}", "X-Forwarded-Proto": "https"},
            anyone,
            False,
        ),
        (
            "the origin a trusted proxy says the page addressed",
            {
                "Origin": "https://chat.internal",
                "Host": "10.0.0.7:8080",
                "X-Forwarded-Host": "chat.internal",
                "X-Forwarded-Proto": "https",
            },
            TRUSTED_PROXY,
            True,
        ),
        (
            "a Host behind a trusted proxy",
            {
                "Origin": "http://evil.example",
                "Host": "evil.example",
                "X-Forwarded-Host": "chat.internal",
                "X-Forwarded-Proto": "https",
            },
            TRUSTED_PROXY,
            False,
        ),
    ]
    canaries = await browsers(proxy.public_url, 1, [backend.child, proxy.child])
    sending = asyncio.create_task(backend.burst(EVENTS, [200], interval_ms=5))
    for transport in ("websocket", "polling"):
        for what, headers, peer, expected in probes:
            assert await admitted(proxy, transport, headers, peer) == expected, (transport, what)
    await sending
    await canaries.wait_seqs(EVENTS)
    assert [s["n"] for s in canaries.seqs(0)] == list(range(EVENTS))

    refused = 2 * sum(not expected for *_, expected in probes)
    metrics = await proxy.metrics()
    assert metrics['enricher_browser_admissions_total{outcome="origin"}'] == refused
    lines = [i for i in proxy.logs("browser_refused") if i.get("reason") == "origin"]
    assert len(lines) == refused
    assert {line["origin"] for line in lines} >= {
        "http://evil.example",
        f"https://127.0.0.1:{port}",
    }


@MODES
async def test_connections_per_client_address_are_limited_when_asked(
    mode: str, backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    proxy = await make_enricher(
        backend,
        ENRICHER_MAX_CONNECTIONS_PER_CLIENT="3",
        ENRICHER_HTTP__TRUSTED_PROXIES=f'["{TRUSTED_PROXY}/32"]',
        # a polling session that stops polling is closed within these
        ENRICHER_PING_INTERVAL="1",
        ENRICHER_PING_TIMEOUT="2",
        ENRICHER_RECOVERY__MAX_DISCONNECTION="3",
    )
    canaries = await browsers(proxy.public_url, 1, [backend.child, proxy.child])
    before, _ = await proxy.per_browser_tables()
    sending = asyncio.create_task(backend.burst(EVENTS, [200], interval_ms=5))
    flood = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.3", 0)))
    behind = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(TRUSTED_PROXY, 0)))
    async with flood, behind:
        own = [await handshake(flood, proxy, "websocket", {}) for _ in range(2)]
        own.append(await handshake(flood, proxy, "polling", {}))
        assert all(not isinstance(c, int) for c in own)
        # the client's fourth, by either transport, and what it says of itself
        assert await handshake(flood, proxy, "websocket", {}) == 403
        assert await handshake(flood, proxy, "polling", {}) == 403
        assert await handshake(flood, proxy, "websocket", {"X-Forwarded-For": "10.9.9.9"}) == 403
        # clients behind a trusted proxy count each as itself
        for client in ("10.1.1.1", "10.1.1.2"):
            xff = {"X-Forwarded-For": f"203.0.113.7, {client}"}
            mine = [await handshake(behind, proxy, "websocket", xff) for _ in range(3)]
            assert all(not isinstance(c, int) for c in mine)
            assert await handshake(behind, proxy, "websocket", xff) == 403
            for ws in mine:
                assert isinstance(ws, aiohttp.ClientWebSocketResponse)
                await ws.close()
        # one closed (a WebSocket, a polling session): room for one more each
        first = own.pop(0)
        assert isinstance(first, aiohttp.ClientWebSocketResponse)
        await first.close()
        polling = own.pop()
        async with flood.post(
            f"http://127.0.0.1:{proxy.public_port}/socket.io/?EIO=4&transport=polling&sid={polling}",
            data=b"1",
        ) as answer:
            assert answer.status == 200
        async with asyncio.timeout(10):
            # enricher handles a close after the client saw it: nothing to wait on
            while isinstance(again := await handshake(flood, proxy, "websocket", {}), int):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        own.append(again)
        assert isinstance(await handshake(flood, proxy, "polling", {}), str)
        for ws in own:
            assert isinstance(ws, aiohttp.ClientWebSocketResponse)
            await ws.close()

    await sending
    await canaries.wait_seqs(EVENTS)
    assert [s["n"] for s in canaries.seqs(0)] == list(range(EVENTS))
    # the last polling session is left to expire: nothing kept once it has
    await proxy.per_browser_tables(lambda tables: tables == before)
    metrics = await proxy.metrics()
    assert metrics['enricher_browser_admissions_total{outcome="too_many_connections"}'] == 5
    clients = [i["client"] for i in proxy.logs("browser_refused")]
    assert sorted(clients) == ["10.1.1.1", "10.1.1.2", "127.0.0.3", "127.0.0.3", "127.0.0.3"]


async def raw_request(port: int, request: bytes) -> bytes:
    """One request as written, byte for byte; the answer's head and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        async with asyncio.timeout(10):
            return await reader.read(64 * 1024)
    finally:
        writer.close()


@MODES
async def test_http_probes_disturb_no_one(
    mode: str, backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    """The probes of the pass-through and of the handshake, all at once against a running
    enricher with jwt auth: each gets its answer, and canary browsers with valid tokens
    get every backend event meanwhile."""
    proxy = await make_enricher(backend, **JWT_ENV, ENRICHER_HTTP__UPLOAD_GRACE="2")
    port = proxy.public_port
    canaries = await browsers(
        proxy.public_url, 2, [backend.child, proxy.child], auth_flag({"token": token()})
    )
    start = len(backend.child.items)
    sending = asyncio.create_task(backend.burst(EVENTS, [200], interval_ms=10))

    # held open meanwhile: uploads a byte at a time, headers a byte at a time, and a slow
    # relayed request its client leaves
    uploads = [await slow_upload(port) for _ in range(3)]
    _, headers_trickle = await asyncio.open_connection("127.0.0.1", port)
    headers_trickle.write(b"GET /rooms HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
    _, leaving = await asyncio.open_connection("127.0.0.1", port)
    leaving.write(b"GET /slow?ms=30000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")

    padding = b"".join(b"X-Pad-%d: %s\r\n" % (n, b"y" * 2000) for n in range(9))
    big = await raw_request(port, b"GET /rooms HTTP/1.1\r\nHost: a\r\n" + padding + b"\r\n")
    assert big.startswith(b"HTTP/1.1 431")
    malformed = await raw_request(port, b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
    assert malformed.startswith(b"HTTP/1.0 400") and b"\r\nServer: enricher\r\n" in malformed
    assert b"aiohttp" not in malformed
    spoofed = await raw_request(
        port,
        b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Host: evil.example\r\n"
        b"X-Client-IP: 6.6.6.6\r\nX-Original-URL: /admin\r\nConnection: close\r\n\r\n",
    )
    seen = json.loads(spoofed.split(b"\r\n\r\n", 1)[1])["headers"]
    names = {name.lower(): value for name, value in zip(seen[::2], seen[1::2], strict=True)}
    assert names["x-forwarded-host"] == "127.0.0.1" and names["x-forwarded-for"] == "127.0.0.1"
    assert "x-client-ip" not in names and "x-original-url" not in names
    named = {"Origin": "http://evil.example", "Host": "evil.example"}
    assert not await admitted(proxy, "websocket", named, "127.0.0.1")
    string_exp = jwt.encode({"aud": "crm", "exp": "9999999999"}, SECRET)
    refused = await browsers(
        proxy.public_url, 1, [proxy.child], auth_flag({"token": string_exp}), wait=False
    )
    error = await refused.wait_until(
        lambda: next((i for i in refused.child.items if i.get("type") == "connect_error"), None),
        "the token whose exp is a string refused",
    )
    assert error["data"] == {"reason": "token_invalid"}

    for upload in uploads:
        assert (await asyncio.wait_for(upload.readline(), 10)).startswith(b"HTTP/1.1 408")
    await backend.child.wait_for(
        lambda item: item.get("event") == "slow_started", "the relayed request", 10, start
    )
    leaving.close()
    await backend.child.wait_for(
        lambda item: item.get("event") == "slow_abandoned", "the relayed request closed", 10, start
    )
    await sending
    await canaries.wait_seqs(EVENTS)
    for browser in range(2):
        assert [s["n"] for s in canaries.seqs(browser)] == list(range(EVENTS))
    headers_trickle.close()
    assert not [i for i in proxy.child.items if i.get("level") == "error"]
