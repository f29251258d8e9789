"""The HTTP servers enricher listens with: what a client may send before its request is
handled, on a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
import structlog
from aiohttp import web

from enricher import server
from enricher.metrics import Metrics


@contextlib.asynccontextmanager
async def serving(
    headers_timeout: float = server.HEADERS_TIMEOUT,
) -> AsyncIterator[tuple[int, Metrics]]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    metrics = Metrics()
    runner, port = await server.start(app, "127.0.0.1:0", metrics, headers_timeout)
    try:
        yield port, metrics
    finally:
        await runner.cleanup()


async def exchange(port: int, request: bytes) -> bytes:
    """What the server answers to ``request``, until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


def get(*headers: str) -> bytes:
    lines = ["GET / HTTP/1.1", "Host: crm.example", *headers, "Connection: close", "", ""]
    return "\r\n".join(lines).encode()


async def test_headers_are_limited_in_all_as_by_node() -> None:
    async with serving() as (port, metrics):
        cookies = [f"Cookie: c{i}={'x' * 5000}" for i in range(3)]  # 15 KB: within
        assert (await exchange(port, get(*cookies))).startswith(b"HTTP/1.1 200")
        cookies.append(f"X-Padding: {'y' * 2000}")  # 17 KB in all, each header small
        answer = await exchange(port, get(*cookies))
        assert answer.startswith(b"HTTP/1.1 431")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "headers_too_large"
        count = metrics.registry.get_sample_value
        assert count("enricher_http_requests_total", {"method": "GET", "status_class": "4xx"}) == 1


async def test_a_malformed_request_is_one_line_without_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = structlog.testing.CapturingLogger()
    every_level = structlog.make_filtering_bound_logger(0)
    monkeypatch.setattr(
        server, "log", structlog.wrap_logger(lines, processors=[], wrapper_class=every_level)
    )
    async with serving() as (port, metrics):
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
        assert answer.split(b" ", 2)[1] == b"400"
        count = metrics.registry.get_sample_value
        labels = {"method": "other", "status_class": "4xx"}
        assert count("enricher_http_requests_total", labels) == 1
    assert [(c.method_name, c.kwargs["event"], c.kwargs["reason"]) for c in lines.calls] == [
        ("info", "http_bad_request", "malformed")
    ]
    assert "exc_info" not in lines.calls[0].kwargs
    assert "Traceback" not in capsys.readouterr().err  # nothing of aiohttp's own


async def test_a_client_trickling_its_headers_is_closed_at_the_timeout() -> None:
    async with serving(headers_timeout=1.0) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")

        async def trickle() -> None:  # the probe's pace: a header byte every 0.2 s
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(b"X")
                    await writer.drain()
                    await asyncio.sleep(0.2)

        task = asyncio.create_task(trickle())
        try:
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, no answer
        finally:
            task.cancel()
            writer.close()
