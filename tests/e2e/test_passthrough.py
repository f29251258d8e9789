"""HTTP pass-through end to end: the Node backend stub's REST routes asked directly and
through `enricher serve`, byte for byte; its faults; 100 MB both ways with memory flat."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout
from yarl import URL

from ..tools import CHROMIUM_ARGS, chromium
from .conftest import TIMEOUT, Backend, Enricher, EnricherFactory, Json, start_backend
from .test_memory import rss
from .test_security import JWT_ENV, token

pytestmark = [pytest.mark.e2e, pytest.mark.enricher]

# What differs between a direct answer and one through enricher, by RFC 9110: the
# connection's own fields (Node's keep-alive ones), and Via naming enricher.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding"}
MIB = 1024 * 1024


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]  # as the server spelled them, in order
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def end_to_end(self) -> list[tuple[str, str]]:
        """The headers a proxy relays unchanged (Date aside: two answers, two seconds)."""
        dropped = HOP_BY_HOP | {"date", "via"}
        return [(k, v) for k, v in self.headers if k.lower() not in dropped]


async def ask(session: aiohttp.ClientSession, method: str, url: str, **kwargs: object) -> Answer:
    # encoded: the URL as written, not requoted by yarl (which would turn %2F into /)
    target = URL(url, encoded=True)
    async with session.request(method, target, allow_redirects=False, **kwargs) as resp:  # type: ignore[arg-type]
        body = await resp.read()
        headers = [(k.decode("latin-1"), v.decode("utf-8")) for k, v in resp.raw_headers]
        return Answer(resp.status, headers, body)


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """A browser-like client that shows answers as they came: no decompression, no jar."""
    async with aiohttp.ClientSession(
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=60),
        max_field_size=64 * 1024,  # as a browser takes big cookies
    ) as session:
        yield session


def multipart(file_bytes: bytes) -> tuple[bytes, str]:
    """One fixed multipart body (a text field and a file), so both paths get the same bytes."""
    boundary = "enricher-e2e-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="caption"\r\n\r\n'
            "Foto KTP 🙂\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="ktp.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + file_bytes
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def pattern(size: int) -> bytes:
    """What the stub's /files/download sends: byte i is (i * 31 + 7) % 251."""
    period = bytes((i * 31 + 7) % 251 for i in range(251))
    return (period * (size // 251 + 1))[:size]


async def test_answers_through_enricher_equal_the_direct_ones(
    backend: Backend, enricher: Enricher
) -> None:
    room = await backend.customer("6281200000001", "Siti Rahma", "Halo, mau tanya cicilan")
    upload, upload_type = multipart(pattern(3 * MIB))
    credentials = {"Cookie": "session=agent-7", "Authorization": "Bearer agent-7-token"}
    gzipped = {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"}
    requests: list[tuple[str, str, dict[str, object]]] = [
        ("GET", "/rooms", {}),
        ("GET", f"/rooms/{room['room_id']}", {}),
        ("GET", f"/messages?room_id={room['room_id']}", {}),
        ("GET", "/rooms/no-such-room", {}),
        ("GET", "/fail", {}),
        ("GET", "/slow?ms=300", {}),
        ("GET", "/redirect?to=relative", {}),
        ("GET", "/cookies/set", {}),
        ("GET", "/me", {}),
        ("GET", "/me", {"headers": credentials}),
        ("GET", "/gzip", {"headers": {"Accept-Encoding": "gzip"}}),
        ("GET", f"/files/download?bytes={5 * MIB}", {}),
        ("GET", f"/files/download?bytes={5 * MIB + 17}&chunked=1", {}),
        ("HEAD", f"/files/download?bytes={5 * MIB}", {}),
        ("POST", "/uploads", {"data": upload, "headers": {"Content-Type": upload_type}}),
        # a compressed upload is relayed compressed, as sent
        ("POST", "/uploads", {"data": gzip.compress(upload), "headers": gzipped}),
        ("GET", "/huge-header?bytes=9000", {}),  # above aiohttp's default header limit
        ("GET", "/socket.io/socket.io.min.js", {}),  # the backend's client script
    ]
    async with client() as session:
        for method, path, kwargs in requests:
            direct = await ask(session, method, backend.url + path, **kwargs)
            relayed = await ask(session, method, enricher.public_url + path, **kwargs)
            what = f"{method} {path} {kwargs.get('headers', '')}"
            assert (relayed.status, relayed.body) == (direct.status, direct.body), what
            assert relayed.end_to_end() == direct.end_to_end(), what
            assert relayed.header("Via") == "1.1 enricher", what
            assert relayed.header("Date") is not None, what

    metrics = await enricher.metrics()
    assert metrics['enricher_http_requests_total{method="GET",status_class="2xx"}'] >= 9
    assert metrics['enricher_http_requests_total{method="GET",status_class="4xx"}'] == 2
    assert metrics['enricher_http_requests_total{method="POST",status_class="2xx"}'] == 2
    assert metrics['enricher_http_body_bytes_total{direction="in"}'] == len(upload) + len(
        gzip.compress(upload)
    )
    assert metrics['enricher_http_body_bytes_total{direction="out"}'] >= 10 * MIB


async def test_the_backend_sees_the_browser_and_its_credentials(
    backend: Backend, make_enricher: EnricherFactory
) -> None:
    async def echo(proxy: Enricher, headers: dict[str, str]) -> dict[str, str]:
        async with client() as session:
            answer = await ask(
                session, "PUT", proxy.public_url + "/echo?x=1&y=%2F", data=b"0123", headers=headers
            )
        arrived = json.loads(answer.body)
        assert (arrived["method"], arrived["url"], arrived["body_bytes"]) == (
            "PUT",
            "/echo?x=1&y=%2F",
            4,
        )
        raw = arrived["headers"]
        return dict(zip(raw[::2], raw[1::2], strict=True))

    browser = {
        "Cookie": "session=agent-7",
        "Authorization": "Bearer agent-7-token",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "meant for enricher only",
        "Keep-Alive": "timeout=30",
        "TE": "trailers",
        "Proxy-Authorization": "Basic cHJveHk6cHJveHk=",
        "X-Forwarded-For": "203.0.113.66",  # a browser's claim
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "spoofed.example",
    }
    direct_peer = await make_enricher(backend)
    seen = await echo(direct_peer, browser)
    public_host = f"127.0.0.1:{direct_peer.public_port}"
    assert seen["Cookie"] == "session=agent-7"
    assert seen["Authorization"] == "Bearer agent-7-token"
    assert seen["Host"] == f"127.0.0.1:{backend.port}"
    assert (seen["X-Forwarded-For"], seen["X-Forwarded-Proto"], seen["X-Forwarded-Host"]) == (
        "127.0.0.1",
        "http",
        public_host,
    )
    assert seen["Via"] == "1.1 enricher"
    for hop in ("X-Hop", "Keep-Alive", "TE", "Proxy-Authorization"):
        assert hop not in seen, hop

    # Behind an Ingress on a trusted network, the Ingress's forwarding headers go on.
    behind_ingress = await make_enricher(backend, ENRICHER_HTTP__TRUSTED_PROXIES='["127.0.0.0/8"]')
    seen = await echo(behind_ingress, browser)
    assert (seen["X-Forwarded-For"], seen["X-Forwarded-Proto"], seen["X-Forwarded-Host"]) == (
        "203.0.113.66, 127.0.0.1",
        "https",
        "spoofed.example",
    )

    # A redirect to the backend's own address names the address the browser used.
    async with client() as session:
        moved = await ask(
            session,
            "GET",
            behind_ingress.public_url + "/redirect?to=absolute",
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "crm.example"},
        )
        # behind two proxies (a CDN, then the Ingress), each adding its own: the browser's
        # side is the first
        chained = await ask(
            session,
            "GET",
            behind_ingress.public_url + "/redirect?to=absolute",
            headers={
                "X-Forwarded-Proto": "https, http",
                "X-Forwarded-Host": "crm.example, ingress.internal",
            },
        )
        direct = await ask(session, "GET", backend.url + "/redirect?to=absolute")
    assert direct.header("Location") == f"{backend.url}/rooms?from=redirect"
    assert moved.status == chained.status == 302
    assert moved.header("Location") == "https://crm.example/rooms?from=redirect"
    assert chained.header("Location") == "https://crm.example/rooms?from=redirect"


async def test_backend_faults_are_clear_answers_and_counted(
    backend: Backend, make_enricher: EnricherFactory
) -> None:
    proxy = await make_enricher(backend, ENRICHER_HTTP__READ_TIMEOUT="0.5")
    async with client() as session:
        # An answer that stops half way is cut for the browser too, never completed.
        with pytest.raises(aiohttp.ClientPayloadError):
            await ask(session, "GET", backend.url + "/broken")
        with pytest.raises(aiohttp.ClientPayloadError):
            await ask(session, "GET", proxy.public_url + "/broken")

        slow = await ask(session, "GET", proxy.public_url + "/slow?ms=3000")
        assert slow.status == 504
        assert json.loads(slow.body)["error"] == "backend_timeout"
        assert slow.header("Content-Type") == "application/json; charset=utf-8"

        # A Set-Cookie too big even for enricher (64 KiB): a 502, and the browser's
        # credentials, which aiohttp's error holds, stay out of the log line.
        huge = await ask(
            session,
            "GET",
            proxy.public_url + "/huge-header?bytes=70000",
            headers={"Authorization": "Bearer agent-7-secret"},
        )
        assert (huge.status, json.loads(huge.body)["error"]) == (502, "backend_error")
        assert "agent-7-secret" not in "\n".join(proxy.child.text)

        # A browser that gives up waiting is not the backend's failure.
        before = await proxy.metrics()
        with pytest.raises(TimeoutError):
            await ask(
                session,
                "GET",
                proxy.public_url + "/slow?ms=400",  # within http.read_timeout
                timeout=aiohttp.ClientTimeout(total=0.1),
            )
        left = 'enricher_http_requests_total{method="GET",status_class="4xx"}'
        await until(lambda m: m.get(left, 0) > before.get(left, 0), proxy)

        for script_as_engine_io in (
            "/socket.io/socket.io.js?EIO=4&transport=polling",
            "/socket.iox?EIO=4&transport=polling",
        ):
            refused = await ask(session, "GET", proxy.public_url + script_as_engine_io)
            assert refused.status == 404, script_as_engine_io

        not_relayed = await ask(
            session, "GET", proxy.public_url + "/socket.io/x?EIO=4&transport=polling"
        )
        assert (not_relayed.status, json.loads(not_relayed.body)["error"]) == (404, "not_relayed")
        dotted = await ask(session, "GET", proxy.public_url + "/rooms/%2e%2e/_control/rooms")
        assert (dotted.status, json.loads(dotted.body)["error"]) == (400, "bad_path")

        await backend.child.stop()
        down = await ask(session, "GET", proxy.public_url + "/rooms")
        assert down.status == 502
        assert json.loads(down.body)["error"] == "backend_unreachable"

    metrics = await proxy.metrics()
    for reason in ("broken", "timeout", "error", "unreachable"):
        assert metrics[f'enricher_http_upstream_errors_total{{reason="{reason}"}}'] == 1, reason
    assert metrics['enricher_http_requests_total{method="GET",status_class="5xx"}'] == 3
    # the browser that left (499), two Socket.IO paths, one not relayed, one bad path
    assert metrics['enricher_http_requests_total{method="GET",status_class="4xx"}'] == 5
    assert [e["event"] for e in proxy.child.items if str(e.get("event")).startswith("http_")] == [
        "http_answer_broken",
        "http_backend_timeout",
        "http_backend_failed",
        "http_bad_request",
        "http_backend_unreachable",
    ]


async def until(
    condition: Callable[[dict[str, float]], bool], proxy: Enricher, timeout: float = TIMEOUT
) -> None:
    """Wait for enricher's metrics to meet ``condition`` (read again after each change)."""
    async with asyncio.timeout(timeout):
        while not condition(await proxy.metrics()):  # noqa: ASYNC110 (a counter: no event)
            await asyncio.sleep(0.05)


async def test_a_shutdown_lets_downloads_under_way_finish(
    backend: Backend, make_enricher: EnricherFactory
) -> None:
    proxy = await make_enricher(backend, ENRICHER_SHUTDOWN_GRACE="20")
    size = 30 * MIB
    digest = hashlib.sha256()
    async with (
        client() as session,
        session.get(f"{proxy.public_url}/files/download?bytes={size}") as resp,
    ):
        assert resp.status == 200
        stopping = False
        async for chunk in resp.content.iter_chunked(256 * 1024):
            digest.update(chunk)
            if not stopping:  # SIGTERM once the answer is under way, as a rollout does
                proxy.child.proc.send_signal(signal.SIGTERM)
                await proxy.wait_log("stopping")
                stopping = True
            await asyncio.sleep(0.005)  # a browser slower than the backend
    assert digest.hexdigest() == hashlib.sha256(pattern(size)).hexdigest()
    await proxy.wait_log("stopped")
    assert proxy.logs("shutdown_grace_exceeded") == []


@contextlib.asynccontextmanager
async def peak_rss(pid: int) -> AsyncIterator[list[int]]:
    """The process's resident memory, sampled every 20 ms while the block runs."""
    samples = [rss(pid)]

    async def sample() -> None:
        while True:
            await asyncio.sleep(0.02)
            samples.append(rss(pid))

    task = asyncio.create_task(sample())
    try:
        yield samples
    finally:
        task.cancel()
        samples.append(rss(pid))


async def test_memory_stays_flat_while_100_mb_stream_each_way(
    backend: Backend, enricher: Enricher
) -> None:
    size = 100 * MIB
    pid = enricher.child.proc.pid
    async with client() as session:
        # Warm-up: the first relayed request sets up its connections and buffers.
        assert (
            await ask(session, "GET", enricher.public_url + "/files/download?bytes=1000000")
        ).status == 200
        baseline = rss(pid)

        async with peak_rss(pid) as samples:
            # A browser slower than the backend: without backpressure enricher would hold
            # the difference.
            digest = hashlib.sha256()
            received = 0
            url = f"{enricher.public_url}/files/download?bytes={size}&chunked=1"
            async with session.get(url) as resp:
                assert resp.status == 200
                async for chunk in resp.content.iter_chunked(256 * 1024):
                    digest.update(chunk)
                    received += len(chunk)
                    await asyncio.sleep(0.002)  # about 100 MB/s at most: a slow reader
            assert received == size
            assert digest.hexdigest() == hashlib.sha256(pattern(size)).hexdigest()

            async def body() -> AsyncIterator[bytes]:
                block = pattern(MIB)
                for _ in range(size // MIB):
                    yield block

            async with session.post(
                enricher.public_url + "/uploads",
                data=body(),
                headers={"Content-Type": "application/octet-stream"},
            ) as resp:
                answer = await resp.json()
            assert resp.status == 201
            assert answer["bytes"] == size
            assert answer["sha256"] == hashlib.sha256(pattern(MIB) * (size // MIB)).hexdigest()

    growth = max(samples) - baseline
    assert growth < 20 * MIB, f"RSS grew by {growth / MIB:.1f} MiB while 200 MB streamed"


# ------------------------------------------------------------------ a page in Chromium

CUSTOMERS = [
    ("6281300000001", "Budi Santoso", "Selamat pagi"),
    ("6281300000002", None, "Ada promo?"),  # no lead
    ("6281300000003", "Dewi Lestari", "Saya mau bayar cicilan"),
]
SCREENSHOTS = Path(__file__).parents[2] / "build"


async def wait_on_page(page: Page, condition: str, arg: object = None) -> None:
    try:
        await page.wait_for_function(condition, arg=arg, timeout=TIMEOUT * 1000)
    except PlaywrightTimeout:
        inbox = await page.evaluate("window.inbox")
        pytest.fail(f"{page.url}: never {condition}; window.inbox = {inbox}", pytrace=False)


async def inbox_after_customers(page: Page, backend: Backend) -> dict[str, Json]:
    """The page's rooms, by id, once the customers have written and each room is listed."""
    await wait_on_page(page, "window.inbox.connected")
    room_ids = [(await backend.customer(*c))["room_id"] for c in CUSTOMERS]
    await wait_on_page(
        page, "ids => ids.every(id => window.inbox.rooms.some(r => r.room_id === id))", room_ids
    )
    inbox = await page.evaluate("window.inbox")
    assert inbox["errors"] == []
    return {room["room_id"]: room for room in inbox["rooms"]}


async def test_the_seed_solusi_3_page_works_with_one_base_url_through_enricher(
    backend: Backend, enricher: Enricher
) -> None:
    """The page, its socket.io script, its socket and its fetch('/rooms/<id>') all at the
    one address it was loaded from: enricher's."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(enricher.public_url + "/app/")
            rooms = await inbox_after_customers(page, backend)
            fetched = await page.evaluate("window.inbox.fetched")
            SCREENSHOTS.mkdir(exist_ok=True)
            await page.screenshot(path=SCREENSHOTS / "solusi3-through-enricher.png")
        finally:
            await browser.close()
    assert {f["status"] for f in fetched} == {200}
    for room_id, room in rooms.items():
        truth = await backend.room(room_id)
        assert (room["leads_info"], room["last_message_text"]) == (
            truth["leads_info"],
            truth["last_message_text"],
        )
    # the page, the script, /me and each room: from the backend, through enricher
    metrics = await enricher.metrics()
    assert metrics['enricher_http_requests_total{method="GET",status_class="2xx"}'] >= 2 + 3
    assert sum((await backend.rest_calls()).values()) >= 3


async def test_a_page_elsewhere_signs_in_with_a_token_across_origins(
    node_harness: Path, make_enricher: EnricherFactory
) -> None:
    """A frontend on another origin: its socket and its credentialed REST calls at
    enricher, with edge authentication (jwt) on both, CORS from the backend for REST and
    from enricher's allowlist for Socket.IO."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    frontend = f"http://localhost:{port}"  # another origin than enricher's 127.0.0.1
    child, port = await start_backend(node_harness, port, CORS_ORIGIN=frontend)
    session = aiohttp.ClientSession()
    backend = Backend(child, port, session)
    try:
        proxy = await make_enricher(
            backend,
            **JWT_ENV,
            ENRICHER_HTTP__AUTH="edge",
            ENRICHER_CORS_ORIGINS=json.dumps([frontend]),
        )
        page_url = f"{frontend}/app/?base={proxy.public_url}"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=chromium(), args=CHROMIUM_ARGS
            )
            try:
                signed_in = await browser.new_page()
                await signed_in.goto(f"{page_url}&token={token(sub='agent-7')}")
                rooms = await inbox_after_customers(signed_in, backend)
                me = await signed_in.evaluate("window.inbox.me")

                stranger = await browser.new_page()
                await stranger.goto(page_url)
                await wait_on_page(stranger, "window.inbox.me && window.inbox.errors.length")
                refused = await stranger.evaluate("window.inbox")
            finally:
                await browser.close()
        assert me["status"] == 200 and me["body"]["token"].count(".") == 2
        for room_id, room in rooms.items():
            assert room["leads_info"] == (await backend.room(room_id))["leads_info"]
        # Refused by enricher, not by the backend (whose 401 says "not signed in").
        assert refused["me"] == {
            "status": 401,
            "body": {"error": "unauthorized", "reason": "token_missing"},
        }
        assert refused["errors"] == ["connect_error: unauthorized"]
        assert refused["rooms"] == []
        refusals = [e for e in proxy.logs("http_refused") if e["path"] == "/me"]
        assert [e["reason"] for e in refusals] == ["token_missing"]
    finally:
        await session.close()
        await child.stop()


async def slow_upload(port: int, path: str = "/uploads") -> asyncio.StreamReader:
    """A client announcing a 1 MB upload and sending it a byte every 0.2 s (the probe's
    pace, not a wait for anything); its connection's reader, for the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {MIB}\r\n\r\n".encode()
    )

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            while not reader.at_eof():
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.2)

    task = asyncio.create_task(trickle())
    reader._trickle = task  # type: ignore[attr-defined]  # kept alive with its reader
    return reader


async def test_slow_uploads_cannot_take_the_backend_connections(
    backend: Backend, make_enricher: EnricherFactory
) -> None:
    """Uploads trickling a byte at a time are cut short after the grace (408), and while
    they last they hold at most max_requests_per_client of the pool: other clients' REST
    calls go on, and the same client's extra requests get 429 at once."""
    proxy = await make_enricher(
        backend,
        ENRICHER_HTTP__MAX_CONNECTIONS="4",
        ENRICHER_HTTP__MAX_REQUESTS_PER_CLIENT="3",
        ENRICHER_HTTP__MIN_UPLOAD_RATE="1024",
        ENRICHER_HTTP__UPLOAD_GRACE="2",
    )
    readers = [await slow_upload(proxy.public_port) for _ in range(3)]
    async with client() as session:
        await until(lambda m: m["enricher_http_requests_in_flight"] == 3, proxy)
        limited = await ask(session, "GET", proxy.public_url + "/rooms")
        assert (limited.status, json.loads(limited.body)["error"]) == (429, "too_many_requests")
        assert limited.header("Retry-After") == "1"
        # another client (another address) is not held up by them
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        ) as elsewhere:
            assert (await ask(elsewhere, "GET", proxy.public_url + "/rooms")).status == 200
        for reader in readers:
            status_line = await asyncio.wait_for(reader.readline(), TIMEOUT)
            assert status_line.startswith(b"HTTP/1.1 408"), status_line
        answer = await ask(session, "GET", proxy.public_url + "/rooms")
        assert answer.status == 200
    metrics = await proxy.metrics()
    assert metrics['enricher_http_requests_total{method="POST",status_class="4xx"}'] == 3
    assert metrics['enricher_http_requests_total{method="GET",status_class="4xx"}'] == 1
    logged = [i.get("event") for i in proxy.child.items]
    assert logged.count("http_upload_too_slow") == 3
    assert logged.count("http_client_limited") == 1


async def test_a_browser_that_leaves_ends_its_relayed_request_at_the_backend(
    backend: Backend, make_enricher: EnricherFactory
) -> None:
    """A browser that gives up on a slow answer (a closed tab, a cancelled fetch) frees
    the backend connection at once, as it would have directly, instead of holding it until
    the backend answers or http.read_timeout."""
    proxy = await make_enricher(backend)
    start = len(backend.child.items)
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.public_port)
    writer.write(b"GET /slow?ms=30000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    # left once the backend has it (before, enricher's relay leaves it unsent: nothing to end)
    await backend.child.wait_for(
        lambda item: item.get("event") == "slow_started", "the backend's request", 10, start
    )
    await until(lambda m: m["enricher_http_requests_in_flight"] == 1, proxy)
    writer.close()
    await backend.child.wait_for(
        lambda item: item.get("event") == "slow_abandoned", "the backend's request closed", 5, start
    )
    await until(lambda m: m["enricher_http_requests_in_flight"] == 0, proxy)
    metrics = await proxy.metrics()
    assert metrics['enricher_http_requests_total{method="GET",status_class="4xx"}'] == 1  # 499
    assert not [i for i in proxy.child.items if i.get("level") == "error"]
