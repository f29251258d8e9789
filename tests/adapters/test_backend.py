"""RoomFetcher against a real aiohttp server: a backend that keeps failing is left alone."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from enricher.backend import CircuitBreaker, RoomFetcher
from enricher.join_types import RestFailure
from enricher.payloads import Rejected, room_id_of
from enricher.tls import client_context

from .. import tools
from ..tools import Clock

PATHS = ["../admin", "a/b?c", "%2e%2e%2f", "x#y", " ", "", "\ud800", "a\x00b", "🙂/..", "..", "."]


async def test_a_failing_backend_is_left_alone_until_the_cooldown_then_probed(
    aiohttp_server: Any,
) -> None:
    requests: list[str] = []
    status = {"code": 503}

    async def room(request: web.Request) -> web.Response:
        requests.append(request.match_info["room_id"])
        if status["code"] != 200:
            return web.json_response({"error": "down"}, status=status["code"])
        return web.json_response({"data": {"room_id": request.match_info["room_id"]}})

    app = web.Application()
    app.router.add_get("/rooms/{room_id}", room)
    server = await aiohttp_server(app)
    outcomes: list[tuple[str, float | None]] = []
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        fetcher = RoomFetcher(
            session,
            str(server.make_url("/")),
            timeout=30.0,  # a loaded machine must not turn a 503 into a timeout
            max_in_flight=4,
            observe=lambda outcome, seconds: outcomes.append((outcome, seconds)),
            breaker=CircuitBreaker(failures=3, cooldown=5.0, clock=clock),
        )
        results = [await fetcher.fetch_room(f"r{i}") for i in range(10)]
        assert [r.reason for r in results if isinstance(r, RestFailure)] == (
            ["rest_status_5xx"] * 3 + ["rest_circuit_open"] * 7
        )
        assert len(requests) == 3  # the other 7 never reached the backend
        assert fetcher.breaker.is_open
        assert [o for o, _ in outcomes].count("circuit_open") == 7

        status["code"] = 200  # the backend is back
        assert isinstance(await fetcher.fetch_room("r10"), RestFailure)  # still cooling down
        clock.now = 5.0
        answer = await fetcher.fetch_room("r11")
        assert not isinstance(answer, RestFailure) and answer.value.room_id == "r11"
        assert not fetcher.breaker.is_open
        assert requests[-1] == "r11"


@given(room_id=st.text(st.characters(blacklist_categories=[])) | st.sampled_from(PATHS))
def test_a_room_id_is_always_one_escaped_path_segment(room_id: str) -> None:
    """Whatever id a payload carries: rejected at the edge, or one escaped path segment."""
    try:
        room_id = room_id_of(room_id)
    except Rejected:
        return
    fetcher = RoomFetcher(None, "http://backend:3000/api/", timeout=1, max_in_flight=1)  # type: ignore[arg-type]
    url = fetcher.room_url(room_id)  # what aiohttp sends: a URL is not parsed again
    assert (url.scheme, url.host, url.port) == ("http", "backend", 3000)
    assert not url.query_string and not url.fragment
    assert url.raw_path.startswith("/api/rooms/")
    segment = url.raw_path.removeprefix("/api/rooms/")
    assert "/" not in segment and unquote(segment) == room_id
    assert segment not in (".", ".."), "a dot segment: resolved away before it is sent"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tools.certificates(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize("ca", [False, True], ids=["system CAs", "its CA configured"])
async def test_rest_over_https_follows_the_tls_settings(
    aiohttp_server: Any, certificates: Path, ca: bool
) -> None:
    """The room fetcher, on the session app.py gives it: a certificate of an unknown CA is
    a failed request (``rest_tls``, outcome ``tls_error``, not reachable), a known one works."""

    async def room(request: web.Request) -> web.Response:
        return web.json_response({"data": {"room_id": request.match_info["room_id"]}})

    app = web.Application()
    app.router.add_get("/rooms/{room_id}", room)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    server = await aiohttp_server(app, ssl=served)
    outcomes: list[str] = []
    context = client_context(True, certificates / "ca.pem" if ca else None)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        fetcher = RoomFetcher(
            session,
            f"https://127.0.0.1:{server.port}",
            timeout=5.0,
            max_in_flight=1,
            observe=lambda outcome, seconds: outcomes.append(outcome),
        )
        answer = await fetcher.fetch_room("r1")
    if ca:
        assert not isinstance(answer, RestFailure) and answer.value.room_id == "r1"
        assert outcomes == ["2xx"] and fetcher.reachable
    else:
        assert answer == RestFailure("rest_tls")
        assert outcomes == ["tls_error"] and not fetcher.reachable
