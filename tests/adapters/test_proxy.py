"""The proxy between a python-socketio backend and python-socketio browsers, on loopback."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web

from enricher.app import running
from enricher.config import load_settings
from enricher.shared_mode import Running

from .. import tools
from .conftest import BrowserClient, StubBackend


async def test_new_customer_arrives_complete(backend: StubBackend, browsers: Any) -> None:
    (browser,) = await browsers(1)
    message = await backend.new_customer("r1", "6281234", "Budi Santoso", "Halo")
    seen = [await browser.next("new_message", "new_room_complete", "new_room") for _ in range(3)]
    assert [event for event, _ in seen] == ["new_message", "new_room_complete", "new_room"]
    assert seen[0][1] == (message,)
    snapshot = seen[1][1][0]
    assert snapshot["leads_info"]["name"] == "Budi Santoso"
    assert snapshot["last_message"]["content_text"] == "Halo"
    assert snapshot["unread_count"] == 1 and snapshot["enrichment"] == "complete"
    assert seen[2][1][0] == snapshot


async def test_rest_is_asked_with_an_escaped_room_id(backend: StubBackend, browsers: Any) -> None:
    (browser,) = await browsers(1)
    await backend.new_customer("../admin?x=1", "6281", None, "hi")
    _, (snapshot,) = await browser.next("new_room_complete")
    ((path, room_id),) = backend.rest_paths
    assert path.startswith("/rooms/..%2Fadmin%3F") and room_id == "../admin?x=1"
    assert snapshot["room_title"] == "Customer 6281"


async def test_pass_through_both_ways_with_acks(backend: StubBackend, browsers: Any) -> None:
    first, second = await browsers(2)
    await backend.sio.emit("agent:typing", ({"agent": "a1"}, "room-9"))
    for browser in (first, second):
        assert await browser.next("agent:typing") == ("agent:typing", ({"agent": "a1"}, "room-9"))
    answer = await first.sio.call("echo", {"x": 1}, timeout=5)
    assert answer == {"x": 1}
    assert await backend.client_events.get() == ("echo", ({"x": 1},))
    await first.sio.emit("status:set", "away")
    assert await backend.client_events.get() == ("status:set", ("away",))


@pytest.mark.parametrize("proxy_settings", [{"client_events": ["echo"]}])
async def test_events_not_allowed_get_an_error_ack(backend: StubBackend, browsers: Any) -> None:
    (browser,) = await browsers(1)
    answer = await browser.sio.call("delete_everything", {}, timeout=5)
    assert answer == {"error": "event_not_allowed", "event": "delete_everything"}
    assert await browser.sio.call("echo", "ok", timeout=5) == "ok"
    assert await backend.client_events.get() == ("echo", ("ok",))


async def test_room_join_is_shared_and_reference_counted(
    backend: StubBackend, browsers: Any
) -> None:
    first, second, third = await browsers(3)
    backend.data.add_room("r1", "6281", "Siti").created = True
    assert await first.sio.call("room:join", {"room_id": "r1"}, timeout=5) == {
        "ok": True,
        "room_id": "r1",
    }
    await second.sio.call("room:join", {"room_id": "r1"}, timeout=5)
    assert await backend.client_events.get() == ("room:join", ({"room_id": "r1"},))
    message = await backend.message("r1", "for the open chat")
    for browser in (first, second):
        assert await browser.next("room:new_message") == ("room:new_message", (message,))
    # events keep their order: had the third got the room's message, it would come first
    assert await third.next("new_message", "room:new_message") == ("new_message", (message,))
    await first.sio.call("room:leave", {"room_id": "r1"}, timeout=5)
    assert backend.client_events.empty()
    await second.sio.disconnect()
    assert await asyncio.wait_for(backend.client_events.get(), 5) == (
        "room:leave",
        ({"room_id": "r1"},),
    )


async def test_reconnects_after_the_backend_disconnects_it(
    backend: StubBackend, proxy: Running, browsers: Any
) -> None:
    (browser,) = await browsers(1)
    await browser.sio.call("room:join", {"room_id": "r1"}, timeout=5)
    await backend.client_events.get()
    (sid,) = [s for s in backend.sio.manager.get_participants("/", None)]
    await backend.sio.disconnect(sid[0])
    await asyncio.wait_for(backend.connections.get(), 10)
    # rooms are joined again on the new connection, and events flow again
    assert await asyncio.wait_for(backend.client_events.get(), 5) == (
        "room:join",
        ({"room_id": "r1"},),
    )
    await backend.new_customer("r2", "6282", "Dewi", "after the reconnect")
    _, (snapshot,) = await browser.next("new_room_complete")
    assert snapshot["last_message_text"] == "after the reconnect"
    assert browser.sio.connected


@pytest.mark.parametrize("proxy_settings", [{"hold_timeout": 0.3}])
async def test_failing_rest_still_gives_a_snapshot(backend: StubBackend, browsers: Any) -> None:
    async def failing(room_id: str) -> web.Response:
        return web.Response(status=503)

    backend.rest_hook = failing
    (browser,) = await browsers(1)
    await backend.new_customer("r1", "6281", "Budi", "hello")
    _, (snapshot,) = await browser.next("new_room_complete")
    assert snapshot["enrichment"] == "partial"
    assert snapshot["enrichment_reason"] == "rest_status_5xx"
    assert snapshot["leads_info"]["name"] == "Budi" and snapshot["unread_count"] == 1


async def test_admin_endpoints(proxy: Running, backend: StubBackend, browsers: Any) -> None:
    (browser,) = await browsers(1)
    await backend.new_customer("r1", "6281", "Budi", "hello")
    await browser.next("new_room_complete")
    admin = f"http://127.0.0.1:{proxy.admin_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{admin}/healthz") as response:
            assert response.status == 200 and await response.json() == {"status": "ok"}
        async with http.get(f"{admin}/readyz") as response:
            assert response.status == 200 and (await response.json())["ready"] is True
        async with http.get(f"{admin}/metrics") as response:
            text = await response.text()
    assert 'enricher_snapshots_total{enrichment="complete",reason=""} 1.0' in text
    assert "enricher_rooms_held 0.0" in text
    assert 'enricher_emit_duration_seconds_count{event="new_room_complete"} 1.0' in text
    assert "process_resident_memory_bytes" in text
    assert 'enricher_events_received_total{event="new_message"} 1.0' in text
    assert "enricher_upstream_connected 1.0" in text
    assert 'enricher_rest_requests_total{outcome="2xx"} 1.0' in text


async def test_an_unreachable_backend_is_retried_until_it_comes(aiohttp_server: Any) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    settings = load_settings(
        None,
        **{
            "upstream.mode": "shared",
            "upstream.url": f"http://127.0.0.1:{port}",
            "upstream.reconnect_delay": 0.05,
            "upstream.reconnect_delay_max": 0.2,
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
        },
    )
    async with running(settings) as proxy, aiohttp.ClientSession() as http:
        readyz = f"http://127.0.0.1:{proxy.admin_port}/readyz"
        async with http.get(readyz) as response:
            assert response.status == 503
            checks = (await response.json())["checks"]
            assert checks == {"upstream": "failing", "rest": "ok", "accepting": "ok"}
        browser = BrowserClient()
        await browser.sio.connect(f"http://127.0.0.1:{proxy.public_port}")
        backend = StubBackend()
        await aiohttp_server(backend.app, port=port)
        await asyncio.wait_for(backend.connections.get(), 10)
        await backend.sio.emit("hello", "again")
        assert await browser.next("hello") == ("hello", ("again",))
        await browser.sio.disconnect()
        async with http.get(readyz) as response:
            assert response.status == 200


async def test_shutdown_sends_held_rooms_then_closes_browsers(aiohttp_server: Any) -> None:
    backend = StubBackend()
    never = asyncio.Event()

    async def hanging(room_id: str) -> None:
        await never.wait()

    backend.rest_hook = hanging
    server = await aiohttp_server(backend.app)
    settings = load_settings(
        None,
        **{
            "upstream.mode": "shared",
            "upstream.url": f"http://127.0.0.1:{server.port}",
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
        },
    )
    browser = BrowserClient()
    disconnected = asyncio.Event()
    browser.sio.on("disconnect", lambda reason=None: disconnected.set())
    async with running(settings) as proxy:
        await asyncio.wait_for(backend.connections.get(), 10)
        await browser.sio.connect(f"http://127.0.0.1:{proxy.public_port}")
        await backend.new_customer("r1", "6281", "Budi", "held while REST hangs")
        await browser.next("new_message")
        assert proxy.join.pending_rooms  # held: REST has not answered
    # leaving the context is the SIGTERM path: the held room went out before the close
    _, (snapshot,) = await browser.next("new_room_complete")
    assert snapshot["enrichment"] == "partial" and snapshot["enrichment_reason"] == "shutdown"
    assert snapshot["last_message_text"] == "held while REST hangs"
    await asyncio.wait_for(disconnected.wait(), 5)


async def test_metrics_pass_promtool(proxy: Running, backend: StubBackend, browsers: Any) -> None:
    """Names, units and help texts as Prometheus wants them (promtool, Debian's prometheus)."""
    promtool = tools.promtool()
    (browser,) = await browsers(1)
    await backend.new_customer("r1", "6281", "Budi", "hello")
    await browser.next("new_room_complete")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{proxy.admin_port}/metrics") as response,
    ):
        text = await response.read()
    check = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await check.communicate(text)
    assert check.returncode == 0, output.decode()
    assert output.decode().strip() == "", output.decode()


async def test_a_draining_proxy_is_unready_and_refuses_new_browsers(
    proxy: Running, browsers: Any
) -> None:
    (connected,) = await browsers(1)
    proxy.downstream.accepting = False  # the first thing shutdown does
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{proxy.admin_port}/readyz") as response,
    ):
        assert response.status == 503
        assert (await response.json())["checks"]["accepting"] == "failing"
    late = BrowserClient()
    refusals: list[Any] = []
    late.sio.on("connect_error", refusals.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await late.sio.connect(f"http://127.0.0.1:{proxy.public_port}", transports=["websocket"])
    assert refusals == [{"message": "shutting_down"}]
    assert connected.sio.connected  # browsers already there stay until they are handed over


def deep_json(depth: int) -> str:
    return '{"a":[' * depth + '"bottom"' + "]}" * depth


async def test_payloads_nested_too_deep_to_decode(
    backend: StubBackend, browsers: Any, proxy: Running
) -> None:
    """Nesting beyond what a JSON decoder goes (orjson stops at 1024 levels, the standard
    library at the recursion limit): a backend event still goes out, counted (the e2e test
    checks that real browsers get it); a browser's is refused with an error ack."""
    first, second = await browsers(2)
    (proxy_sid,) = list(backend.sio.eio.sockets)
    await backend.sio.eio.send(proxy_sid, '2["agent:deep",' + deep_json(20_000) + "]")
    await backend.sio.emit("agent:after", 1)
    assert await second.next("agent:after") == ("agent:after", (1,))
    rejected = proxy.metrics.registry.get_sample_value(
        "enricher_payloads_rejected_total", {"event": "other", "reason": "too_deep"}
    )
    assert rejected == 1

    answers: asyncio.Queue[Any] = asyncio.Queue()
    first.sio.callbacks.setdefault("/", {})[77] = lambda *a: answers.put_nowait(a)
    await first.sio.eio.send("277" + '["agent:deep",' + deep_json(20_000) + "]")
    assert await asyncio.wait_for(answers.get(), 5) == (
        {"error": "payload_too_deep", "event": "agent:deep"},
    )
    assert await second.sio.call("echo", "still here", timeout=5) == "still here"
    assert await backend.client_events.get() == ("echo", ("still here",))


@pytest.mark.parametrize("proxy_settings", [{"client_event_rate": 0.001, "client_event_burst": 5}])
async def test_a_browser_over_its_event_rate_gets_error_acks(
    backend: StubBackend, browsers: Any, proxy: Running
) -> None:
    flooding, calm = await browsers(2)
    answers = [await flooding.sio.call("echo", n, timeout=5) for n in range(12)]
    assert answers[:5] == [0, 1, 2, 3, 4]  # its burst
    assert answers[5:] == [{"error": "rate_limited", "event": "echo"}] * 7
    assert await calm.sio.call("echo", "mine", timeout=5) == "mine"  # a bucket each
    refused = proxy.metrics.registry.get_sample_value(
        "enricher_client_events_total", {"event": "other", "outcome": "rate_limited"}
    )
    assert refused == 7


@pytest.mark.parametrize(
    ("proxy_settings", "allowed"),
    [
        ({}, {None}),  # the default: no page from another origin
        ({"cors_origins": ["https://chat.example.com"]}, {None, "https://chat.example.com"}),
        ({"cors_origins": "*"}, {None, "https://chat.example.com", "https://evil.example"}),
    ],
)
async def test_pages_of_other_origins_are_refused_unless_listed(
    proxy: Running, allowed: set[str | None]
) -> None:
    own = f"http://127.0.0.1:{proxy.public_port}"  # a page served from enricher's address
    for origin in (None, own, "https://chat.example.com", "https://evil.example"):
        client = socketio.AsyncClient(reconnection=False)
        headers = {"Origin": origin} if origin else {}
        try:
            await client.connect(
                f"http://127.0.0.1:{proxy.public_port}", headers=headers, transports=["websocket"]
            )
            connected = client.connected
        except socketio.exceptions.ConnectionError:
            connected = False
        finally:
            await client.disconnect()
        assert connected == (origin in allowed or origin == own), origin


@pytest.mark.parametrize("room_id", ["..", "."])
async def test_a_dot_room_id_is_not_an_id_and_never_reaches_rest(
    backend: StubBackend, browsers: Any, room_id: str
) -> None:
    """No URL path can carry it: GET /rooms/.. would be GET /."""
    (browser,) = await browsers(1)
    await backend.new_customer(room_id, "6281", "Siti", "hi")
    _, (raw,) = await browser.next("new_room")
    assert raw["room_id"] == room_id and "enrichment" not in raw  # forwarded as it came
    _, (message,) = await browser.next("new_message")
    assert message["room_id"] == room_id
    assert backend.rest_paths == []
