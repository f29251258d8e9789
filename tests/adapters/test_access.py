"""Edge authentication and room access, against real python-socketio browsers and a real
aiohttp backend (its REST, its auth endpoint, its key set)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import jwt
import pytest
import socketio
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from enricher.app import running
from enricher.config import load_settings
from enricher.logs import configure_logging
from enricher.shared_mode import Running
from enricher.transparent_mode import RunningTransparent

from .conftest import BrowserClient, StubBackend

SECRET = "a-test-secret-of-at-least-32-bytes!"


def token(**claims: Any) -> str:
    return jwt.encode({"exp": int(time.time()) + 300, **claims}, SECRET, algorithm="HS256")


@contextlib.asynccontextmanager
async def proxy_for(backend: StubBackend, **settings: Any) -> AsyncIterator[Running]:
    configure_logging("warning", "console")
    loaded = load_settings(
        None,
        **{
            "upstream.mode": "shared",
            "upstream.url": backend.url,
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
            **settings,
        },
    )
    async with running(loaded) as proxy:
        await asyncio.wait_for(backend.connections.get(), 10)
        yield proxy


async def endpoint(
    aiohttp_server: Any,
    path: str,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    host: str = "127.0.0.1",
) -> tuple[str, Any]:
    """A real HTTP server answering GET ``path`` with ``handler``: its URL, and itself."""
    app = web.Application()
    app.router.add_get(path, handler)
    server = await aiohttp_server(app)
    return f"http://{host}:{server.port}{path}", server


def backend_auth(url: str) -> dict[str, Any]:
    """Settings of auth.mode backend, asking ``url``."""
    return {"auth.mode": "backend", "auth.backend_url": url}


async def connect(
    proxy: Running | RunningTransparent,
    *,
    auth: Any = None,
    headers: dict[str, str] | None = None,
    query: str = "",
) -> tuple[BrowserClient, Any]:
    """A browser that tried to connect: itself, and the refusal's data if it was refused."""
    browser = BrowserClient()
    refusals: asyncio.Queue[Any] = asyncio.Queue()
    browser.sio.on("connect_error", refusals.put_nowait)
    try:
        await browser.sio.connect(
            f"http://127.0.0.1:{proxy.public_port}{query}",
            auth=auth,
            headers=headers or {},
            transports=["websocket"],
            wait_timeout=5,
        )
    except socketio.exceptions.ConnectionError:
        return browser, await asyncio.wait_for(refusals.get(), 5)
    return browser, None


JWT = {"auth.mode": "jwt", "auth.jwt": {"secret": SECRET, "audience": "crm", "issuer": "login"}}


async def test_jwt_admits_valid_tokens_however_presented(backend: StubBackend) -> None:
    good = token(aud="crm", iss="login")
    async with proxy_for(backend, **JWT) as proxy:
        ways = [
            await connect(proxy, auth={"token": good}),
            await connect(proxy, headers={"Authorization": f"Bearer {good}"}),
            await connect(proxy, query=f"?token={good}"),
        ]
        assert [refusal for _, refusal in ways] == [None, None, None]
        await backend.sio.emit("hello", "agents")
        for browser, _ in ways:
            assert await browser.next("hello") == ("hello", ("agents",))
            await browser.sio.disconnect()


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        (None, "token_missing"),
        ({"token": "not.a.jwt"}, "token_invalid"),
        (
            {"token": jwt.encode({"exp": 2**40}, "another-secret-of-32-bytes-or-more!")},
            "token_invalid",
        ),
        ({"token": token(aud="crm", iss="login", exp=int(time.time()) - 60)}, "token_expired"),
        ({"token": token(aud="billing", iss="login")}, "token_audience"),
        ({"token": token(aud="crm", iss="someone-else")}, "token_issuer"),
        ({"token": jwt.encode({"aud": "crm", "iss": "login"}, SECRET)}, "token_invalid"),
        # a NumericDate is a number: as a string its expiry would never be enforced
        (
            {"token": jwt.encode({"aud": "crm", "iss": "login", "exp": "9999999999"}, SECRET)},
            "token_invalid",
        ),
        (
            {"token": jwt.encode({"aud": "crm", "iss": "login", "exp": 2**40, "iat": "0"}, SECRET)},
            "token_invalid",
        ),
    ],
    ids=[
        "missing",
        "garbage",
        "wrong_key",
        "expired",
        "audience",
        "issuer",
        "no_expiry",
        "expiry_a_string",
        "issued_at_a_string",
    ],
)
async def test_jwt_refuses_at_connect_with_the_reason(
    backend: StubBackend, auth: Any, reason: str
) -> None:
    async with proxy_for(backend, **JWT) as proxy:
        _, refusal = await connect(proxy, auth=auth)
        assert refusal == {"message": "unauthorized", "data": {"reason": reason}}
        metrics = proxy.metrics.registry.get_sample_value
        assert metrics("enricher_browser_admissions_total", {"outcome": reason}) == 1


async def test_jwt_with_a_key_set_url_and_rs256(backend: StubBackend, aiohttp_server: Any) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)

    async def key_set(request: web.Request) -> web.Response:
        return web.json_response({"keys": [{**jwk, "kid": "k1", "use": "sig"}]})

    jwks_url, _ = await endpoint(aiohttp_server, "/jwks.json", key_set)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    signed = jwt.encode(
        {"exp": int(time.time()) + 60}, pem, algorithm="RS256", headers={"kid": "k1"}
    )
    forged = jwt.encode({"exp": int(time.time()) + 60}, SECRET, headers={"kid": "k1"})
    settings = {
        "auth.mode": "jwt",
        "auth.jwt": {
            "algorithms": ["RS256"],
            "jwks_url": jwks_url,
        },
    }
    async with proxy_for(backend, **settings) as proxy:
        browser, refusal = await connect(proxy, auth={"token": signed})
        assert refusal is None
        _, refusal = await connect(proxy, auth={"token": forged})
        assert refusal["data"] == {"reason": "token_invalid"}
        await browser.sio.disconnect()


async def test_an_expired_token_is_disconnected(backend: StubBackend) -> None:
    settings = {"auth.mode": "jwt", "auth.jwt": {"secret": SECRET, "leeway": 0}}
    async with proxy_for(backend, **settings) as proxy:
        short = jwt.encode({"exp": int(time.time()) + 2}, SECRET)
        browser, refusal = await connect(proxy, auth={"token": short})
        assert refusal is None
        gone = asyncio.Event()
        browser.sio.on("disconnect", lambda reason=None: gone.set())
        await asyncio.wait_for(gone.wait(), 10)
        dropped = proxy.metrics.registry.get_sample_value(
            "enricher_browsers_dropped_total", {"reason": "credentials_expired"}
        )
        assert dropped == 1 and not proxy.downstream.sio.eio.sockets


async def test_a_refused_socket_receives_nothing_while_it_is_checked(
    backend: StubBackend, aiohttp_server: Any
) -> None:
    """Broadcasts sent while the backend decides about a socket never reach it."""
    asked, answer = asyncio.Event(), asyncio.Event()

    async def check(request: web.Request) -> web.Response:
        if request.headers.get("Cookie") == "session=good":
            return web.Response(status=204)
        asked.set()
        await answer.wait()
        return web.Response(status=401)

    url, _ = await endpoint(aiohttp_server, "/auth/check", check)
    settings = backend_auth(url)
    async with proxy_for(backend, **settings) as proxy, aiohttp.ClientSession() as http:
        agent, refusal = await connect(proxy, headers={"Cookie": "session=good"})
        assert refusal is None
        url = f"http://127.0.0.1:{proxy.public_port}/socket.io/?EIO=4&transport=websocket"
        async with http.ws_connect(url, headers={"Cookie": "session=stolen"}) as raw:
            assert (await raw.receive_str()).startswith("0")  # engine.io open
            await raw.send_str('40{"token":"guess"}')
            await asyncio.wait_for(asked.wait(), 5)
            await backend.new_customer("r1", "6281", "Budi", "private customer message")
            await agent.next("new_message")  # broadcast while the socket was being checked
            answer.set()
            refused = await asyncio.wait_for(raw.receive_str(), 5)
            assert refused == '44{"message":"unauthorized","data":{"reason":"backend_refused"}}'
            await raw.send_str("40")  # ask again: what was sent to it before is now in front
            assert await asyncio.wait_for(raw.receive_str(), 5) == refused
        await agent.sio.disconnect()


async def test_backend_mode_forwards_credentials_and_caches_the_answer(
    backend: StubBackend, aiohttp_server: Any
) -> None:
    seen: list[dict[str, str]] = []

    async def check(request: web.Request) -> web.Response:
        seen.append({k: v for k, v in request.headers.items() if k in ("Cookie", "Authorization")})
        good = request.headers.get("Authorization") == "Bearer agent-7"
        return web.Response(status=200 if good else 403)

    url, auth_server = await endpoint(aiohttp_server, "/me", check)
    settings = backend_auth(url)
    async with proxy_for(backend, **settings) as proxy:
        first, refusal = await connect(proxy, auth={"token": "agent-7"}, headers={"Cookie": "s=1"})
        assert refusal is None
        second, refusal = await connect(proxy, auth={"token": "agent-7"}, headers={"Cookie": "s=1"})
        assert refusal is None
        assert seen == [{"Cookie": "s=1", "Authorization": "Bearer agent-7"}]  # asked once
        _, refusal = await connect(proxy, auth={"token": "intruder"})
        assert refusal["data"] == {"reason": "backend_refused"}
        _, refusal = await connect(proxy)
        assert refusal["data"] == {"reason": "credentials_missing"}
        await auth_server.close()
        _, refusal = await connect(proxy, auth={"token": "agent-8"})
        assert refusal["data"] == {"reason": "auth_unavailable"}
        for browser in (first, second):
            await browser.sio.disconnect()


async def test_room_join_is_checked_with_the_browsers_credentials(backend: StubBackend) -> None:
    backend.rest_allows = lambda headers: headers.get("Authorization") == "Bearer owner"
    backend.data.add_room("r1", "6281", "Budi").created = True
    async with proxy_for(backend, **{"auth.room_check": True}) as proxy:
        owner, _ = await connect(proxy, auth={"token": "owner"})
        other, _ = await connect(proxy, auth={"token": "other"})
        answer = await owner.sio.call("room:join", {"room_id": "r1"}, timeout=5)
        assert answer == {"ok": True, "room_id": "r1"}
        answer = await other.sio.call("room:join", {"room_id": "r1"}, timeout=5)
        assert answer == {"error": "room_forbidden", "event": "room:join"}
        await backend.message("r1", "for the owner only")
        assert (await owner.next("room:new_message"))[1][0]["content_text"] == "for the owner only"
        await other.sio.call("echo", "flush", timeout=5)  # anything sent before is in front
        received = [other.events.get_nowait()[0] for _ in range(other.events.qsize())]
        assert "room:new_message" not in received
        for browser in (owner, other):
            await browser.sio.disconnect()


async def test_a_cookie_the_backend_sets_never_travels_with_another_browsers_check(
    backend: StubBackend, aiohttp_server: Any
) -> None:
    """A backend that sets its session cookie again on each check (a rolling session):
    that cookie is not kept for the next browser. A host name, not an address: aiohttp's
    cookie jar ignores cookies of IP addresses."""
    seen: list[tuple[str | None, str | None]] = []

    async def check(request: web.Request) -> web.Response:
        cookie = request.headers.get("Cookie")
        seen.append((cookie, request.headers.get("Authorization")))
        if cookie != "session=alice":
            return web.Response(status=401)
        response = web.Response(status=204)
        response.set_cookie("session", "alice")
        return response

    url, _ = await endpoint(aiohttp_server, "/auth", check, host="localhost")
    settings = backend_auth(url)
    async with proxy_for(backend, **settings) as proxy:
        alice, refusal = await connect(proxy, headers={"Cookie": "session=alice"})
        assert refusal is None
        _, refusal = await connect(proxy, auth={"token": "anything"})
        assert refusal == {"message": "unauthorized", "data": {"reason": "backend_refused"}}
        assert seen == [("session=alice", None), (None, "Bearer anything")]
        await alice.sio.disconnect()


async def test_a_polling_browser_gone_while_checked_leaves_nothing_behind(
    backend: StubBackend, aiohttp_server: Any
) -> None:
    asked, answer = asyncio.Event(), asyncio.Event()

    async def check(request: web.Request) -> web.Response:
        asked.set()
        await answer.wait()
        return web.Response(status=204)

    url, _ = await endpoint(aiohttp_server, "/auth", check)
    settings = backend_auth(url)
    async with proxy_for(backend, **settings) as proxy, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{proxy.public_port}/socket.io/?EIO=4&transport=polling"
        async with http.get(base, headers={"Cookie": "s=1"}) as response:
            sid = json.loads((await response.text())[1:])["sid"]
        url = f"{base}&sid={sid}"
        connecting = asyncio.ensure_future(http.post(url, data="40"))
        await asyncio.wait_for(asked.wait(), 5)
        async with http.post(url, data="1") as response:  # engine.io close: the page left
            assert response.status == 200
        answer.set()
        (await connecting).close()
        sizes = proxy.downstream.sizes()
        assert sizes["browser_sessions"] == sizes["browser_room_members"] == 0, sizes
        assert sizes["browser_credentials"] == 0


async def test_connect_attempts_per_connection_are_limited(
    backend: StubBackend, aiohttp_server: Any
) -> None:
    asks: list[str] = []

    async def check(request: web.Request) -> web.Response:
        asks.append(request.headers.get("Authorization", ""))
        return web.Response(status=401)

    url, _ = await endpoint(aiohttp_server, "/auth", check)
    settings = backend_auth(url)
    async with proxy_for(backend, **settings) as proxy, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{proxy.public_port}/socket.io/?EIO=4&transport=websocket"
        async with http.ws_connect(url) as raw:
            assert (await raw.receive_str()).startswith("0")
            reasons = []
            for guess in range(5):
                await raw.send_str(f'40{{"token":"guess-{guess}"}}')
                refused = json.loads((await asyncio.wait_for(raw.receive_str(), 5))[2:])
                reasons.append(refused["data"]["reason"])
        assert reasons == ["backend_refused"] * 3 + ["too_many_attempts"] * 2
        assert asks == ["Bearer guess-0", "Bearer guess-1", "Bearer guess-2"]


async def test_an_unreachable_key_set_is_not_asked_for_every_browser(
    backend: StubBackend, aiohttp_server: Any
) -> None:
    asks = 0

    async def key_set(request: web.Request) -> web.Response:
        nonlocal asks
        asks += 1
        return web.Response(status=503)

    jwks_url, _ = await endpoint(aiohttp_server, "/jwks.json", key_set)
    settings = {
        "auth.mode": "jwt",
        "auth.jwt": {
            "algorithms": ["RS256"],
            "jwks_url": jwks_url,
        },
    }
    forged = jwt.encode({"exp": int(time.time()) + 60}, SECRET, headers={"kid": "k9"})
    async with proxy_for(backend, **settings) as proxy:
        for _ in range(3):
            _, refusal = await connect(proxy, auth={"token": forged})
            assert refusal["data"] == {"reason": "jwks_unavailable"}
        assert asks == 1


async def test_a_token_for_another_audience_is_refused_when_none_is_configured(
    backend: StubBackend,
) -> None:
    async with proxy_for(backend, **{"auth.mode": "jwt", "auth.jwt": {"secret": SECRET}}) as proxy:
        _, refusal = await connect(proxy, auth={"token": token(aud="billing")})
        assert refusal == {"message": "unauthorized", "data": {"reason": "token_audience"}}


async def test_credentials_no_header_can_carry_are_refused(backend: StubBackend) -> None:
    settings = backend_auth(f"{backend.url}/rooms/me")
    async with proxy_for(backend, **settings) as proxy:
        _, refusal = await connect(proxy, auth={"token": "a\r\nX-Admin: 1"})
        assert refusal == {"message": "unauthorized", "data": {"reason": "credentials_invalid"}}
        assert backend.rest_paths == []  # nothing was sent
