"""The Socket.IO Admin UI's view (``admin_ui``): a python-socketio client stands in for the
Admin UI's page on the admin address, the stub backend and python-socketio browsers on the
public one, in both modes. The page sees every browser with its handshake (credentials
redacted), their comings and goings and rooms, and this process's numbers; without the
credentials, or with the view off, it sees nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import socketio

from enricher.app import running
from enricher.config import load_settings
from enricher.logs import configure_logging

from ..support.network import cut
from ..tools import until
from .conftest import BrowserClient, StubBackend

PASSWORD = "a-long-admin-password"
MODES = ["transparent", "shared"]


@contextlib.asynccontextmanager
async def proxy_in(backend: StubBackend, mode: str, **settings: Any) -> AsyncIterator[Any]:
    configure_logging("warning", "console")
    loaded = load_settings(
        None,
        **{
            "upstream.mode": mode,
            "upstream.url": backend.url,
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
            "admin_ui.enabled": True,
            "admin_ui.password": PASSWORD,
            **settings,
        },
    )
    async with running(loaded) as proxy:
        if mode == "shared":
            await asyncio.wait_for(backend.connections.get(), 10)
        yield proxy


class AdminPage:
    """What the Admin UI's page does: connect to ``/admin`` with its login, and keep what
    it is told."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.told: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()

        async def told(event: str, *args: Any) -> None:
            await self.told.put((event, args))

        self.sio.on("*", told, namespace="/admin")

        async def refused(data: Any) -> None:
            await self.told.put(("connect_error", (data,)))

        self.sio.on("connect_error", refused, namespace="/admin")

    async def open(self, port: int, auth: Any) -> None:
        await self.sio.connect(
            f"http://127.0.0.1:{port}", namespaces=["/admin"], auth=auth, transports=["websocket"]
        )

    async def next(self, name: str, timeout: float = 5.0) -> tuple[Any, ...]:
        while True:
            event, args = await asyncio.wait_for(self.told.get(), timeout)
            if event == name:
                return args


ALICE = {"X-Api-Key": "alice-key", "X-Agent": "alice"}


async def browser(port: int, query: str = "", **headers: str) -> BrowserClient:
    b = BrowserClient()
    url = f"http://127.0.0.1:{port}/{query}"
    await b.sio.connect(url, headers=headers, transports=["websocket"])
    return b


@pytest.mark.parametrize("mode", MODES)
async def test_the_admin_page_sees_who_is_connected_and_no_credentials(
    backend: StubBackend, mode: str
) -> None:
    async with proxy_in(backend, mode) as proxy:
        alice = await browser(
            proxy.public_port, "?token=alice-token&room=7", Cookie="s=alice-cookie", **ALICE
        )
        page = AdminPage()
        await page.open(proxy.admin_port, {"username": "admin", "password": PASSWORD})
        try:
            (config,) = await page.next("config")
            operations = {"EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"}
            assert operations.isdisjoint(config["supportedFeatures"])  # read-only
            (sockets,) = await page.next("all_sockets")
            assert [(s["nsp"], s["id"]) for s in sockets] == [("/", alice.sio.get_sid())]
            shown = sockets[0]["handshake"]
            assert shown["headers"]["cookie"] == shown["headers"]["x-api-key"] == "[redacted]"
            assert shown["headers"]["x-agent"] == "alice"  # not a credential: shown
            # engine.io's own parameters shown, every other one may be a credential
            assert shown["query"]["EIO"] == "4" and shown["query"]["transport"] == "websocket"
            assert shown["query"]["token"] == shown["query"]["room"] == "[redacted]"
            assert "alice-token" not in str(sockets) and "alice-cookie" not in str(sockets)
            assert "alice-key" not in str(sockets)

            bob = await browser(proxy.public_port)
            bob_sid = bob.sio.get_sid()
            connected, _ = await page.next("socket_connected")
            assert connected["id"] == bob_sid
            assert connected["transport"] == "websocket"
            if mode == "shared":  # its rooms are enricher's in shared mode
                await bob.sio.call("room:join", {"room_id": "r1"}, timeout=5)
                assert (await page.next("room_joined"))[:3] == ("/", "room:r1", bob_sid)
            await bob.sio.disconnect()
            nsp, sid, _, _ = await page.next("socket_disconnected")
            assert (nsp, sid) == ("/", bob_sid)

            stats = (await page.next("server_stats"))[0]
            assert stats["clientsCount"] == 1
            assert stats["namespaces"] == [{"name": "/", "socketsCount": 1}]
        finally:
            await page.sio.disconnect()
            await alice.sio.disconnect()


@pytest.mark.parametrize(
    "auth",
    [
        {"username": "admin", "password": "wrong-password-here"},
        {"username": "root", "password": PASSWORD},
        {"password": PASSWORD},
        None,
        "admin:" + PASSWORD,
    ],
)
async def test_the_admin_page_without_its_credentials_is_refused(
    backend: StubBackend, auth: Any
) -> None:
    async with proxy_in(backend, "transparent") as proxy:
        logins = lambda outcome: proxy.metrics.registry.get_sample_value(  # noqa: E731
            "enricher_admin_ui_logins_total", {"outcome": outcome}
        )
        page = AdminPage()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await page.open(proxy.admin_port, auth)
        assert await page.next("connect_error") == ({"message": "invalid credentials"},)
        assert page.told.empty()  # nothing else: no config, no sockets
        assert (logins("refused"), logins("accepted")) == (1, 0)
        await page.open(proxy.admin_port, {"username": "admin", "password": PASSWORD})
        await page.sio.disconnect()
        assert (logins("refused"), logins("accepted")) == (1, 1)


async def test_only_the_admin_namespace_is_on_the_admin_address(backend: StubBackend) -> None:
    async with proxy_in(backend, "transparent") as proxy:
        other = socketio.AsyncClient(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await other.connect(f"http://127.0.0.1:{proxy.admin_port}", transports=["websocket"])


async def test_without_admin_ui_the_admin_address_has_no_socket_io(backend: StubBackend) -> None:
    async with (
        proxy_in(backend, "transparent", **{"admin_ui.enabled": False}) as proxy,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{proxy.admin_port}/socket.io/?EIO=4&transport=polling") as resp,
    ):
        assert resp.status == 404


WS = "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket"


async def open_socket(http: aiohttp.ClientSession, port: int, connect: str = "40") -> Any:
    """A browser's WebSocket, its "/" CONNECT sent: the socket and the backend's answer."""
    ws = await http.ws_connect(WS.format(port))
    await ws.receive_str()  # engine.io OPEN
    await ws.send_str(connect)
    answer = json.loads((await ws.receive_str())[2:])
    return ws, answer


async def test_the_view_follows_a_browser_away_back_and_kicked(backend: StubBackend) -> None:
    """Transparent mode: a browser whose connection is lost leaves the list (its session
    kept meanwhile), is listed again when it comes back with its pid, on its new
    connection, and leaves it for good when the backend kicks it."""
    async with proxy_in(backend, "transparent") as proxy, aiohttp.ClientSession() as http:
        view = proxy.relay.view
        ws, answer = await open_socket(http, proxy.public_port)
        sid = answer["sid"]
        await asyncio.wait_for(until(lambda: ("/", sid) in view.sockets), 5)
        first = view.sockets[("/", sid)]["clientId"]
        cut(ws)
        await asyncio.wait_for(until(lambda: answer["pid"] in proxy.relay.kept), 5)
        assert view.sockets == {}

        back = {"pid": answer["pid"], "offset": f"{proxy.relay.epoch}.0"}
        ws, again = await open_socket(http, proxy.public_port, "40" + json.dumps(back))
        assert again["sid"] == sid  # recovered
        await asyncio.wait_for(until(lambda: ("/", sid) in view.sockets), 5)
        assert view.sockets[("/", sid)]["clientId"] != first  # its new connection

        await backend.sio.disconnect(sid)
        await asyncio.wait_for(until(lambda: view.sockets == {}), 5)
        await ws.close()


async def test_a_namespace_answered_while_its_browser_is_away_is_never_listed(
    backend: StubBackend,
) -> None:
    """A namespace the backend lets in after the browser's connection was lost is not
    listed (the browser is away), nor left behind when its session expires."""
    let_in = asyncio.Event()

    async def chat_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await let_in.wait()

    backend.sio.on("connect", chat_connect, namespace="/chat")
    async with (
        proxy_in(backend, "transparent", **{"recovery.max_disconnection": 1.0}) as proxy,
        aiohttp.ClientSession() as http,
    ):
        view = proxy.relay.view
        ws, answer = await open_socket(http, proxy.public_port)
        await ws.send_str("40/chat,")
        await asyncio.wait_for(until(lambda: len(view.sockets) == 1), 5)
        cut(ws)
        await asyncio.wait_for(until(lambda: answer["pid"] in proxy.relay.kept), 5)
        kept = proxy.relay.kept[answer["pid"]]
        let_in.set()
        await asyncio.wait_for(until(lambda: "/chat" in kept.sockets), 5)
        assert view.sockets == {}
        await asyncio.wait_for(until(lambda: not proxy.relay.kept), 5)  # expired
        assert view.sockets == {}


async def test_a_recovered_browser_is_listed_in_its_rooms_again(backend: StubBackend) -> None:
    """Shared mode: a browser that recovers its session is back in its rooms, and the
    view says so."""
    async with proxy_in(backend, "shared") as proxy, aiohttp.ClientSession() as http:
        view = proxy.downstream.view
        ws, answer = await open_socket(http, proxy.public_port)
        sid = answer["sid"]
        await ws.send_str('420["room:join",{"room_id":"r1"}]')
        await asyncio.wait_for(until(lambda: "room:r1" in view.sockets[("/", sid)]["rooms"]), 5)
        cut(ws)
        await asyncio.wait_for(until(lambda: view.sockets == {}), 5)
        back = {"pid": answer["pid"], "offset": ""}  # it got no event
        ws, again = await open_socket(http, proxy.public_port, "40" + json.dumps(back))
        assert again["sid"] == sid
        await asyncio.wait_for(until(lambda: ("/", sid) in view.sockets), 5)
        assert "room:r1" in view.sockets[("/", sid)]["rooms"]
        await ws.close()


async def test_a_refused_page_hears_nothing_while_another_watches(backend: StubBackend) -> None:
    """A page whose login was refused gets none of what logged-in pages are told."""
    async with proxy_in(backend, "transparent") as proxy:
        admin = AdminPage()
        await admin.open(proxy.admin_port, {"username": "admin", "password": PASSWORD})
        await admin.next("all_sockets")
        intruder = AdminPage()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await intruder.open(proxy.admin_port, {"username": "\ud800", "password": "x"})
        await intruder.next("connect_error")
        alice = await browser(proxy.public_port)
        await admin.next("socket_connected")
        await admin.next("server_stats")
        assert intruder.told.empty()
        await alice.sio.disconnect()
        await admin.sio.disconnect()
