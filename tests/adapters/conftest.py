"""A python-socketio backend stub with REST, the proxy in-process, python-socketio browsers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import socketio
from aiohttp import web
from socketio import packet

from enricher.app import running
from enricher.config import load_settings
from enricher.logs import configure_logging
from enricher.shared_mode import Running

from ..core.world import Backend


class StubBackend:
    """The backend's events and REST, on a real python-socketio server."""

    def __init__(self) -> None:
        self.data = Backend()
        self.sio = socketio.AsyncServer(async_mode="aiohttp", logger=False)
        self.app = web.Application()
        self.sio.attach(self.app)
        self.app.router.add_get("/rooms/{room_id}", self._room)
        self.rest_shape = "flat"
        self.rest_hook: Callable[[str], Any] | None = None
        self.rest_paths: list[tuple[str, str]] = []
        self.rest_asked: asyncio.Queue[str] = asyncio.Queue()  # each GET /rooms/<id>'s id
        self.rest_headers: list[dict[str, str]] = []
        # Whether a request's headers may read a room (the backend's access rule).
        self.rest_allows: Callable[[dict[str, str]], bool] = lambda headers: True
        self.client_events: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()
        self.connections: asyncio.Queue[str] = asyncio.Queue()
        # What each connection presented: its Cookie and Authorization headers and auth.
        self.handshakes: dict[str, dict[str, Any]] = {}
        self.disconnections: asyncio.Queue[str] = asyncio.Queue()
        self.event_sids: list[str] = []
        # Whether the backend lets a connection in, by what it presented.
        self.admits: Callable[[dict[str, Any]], bool] = lambda handshake: True
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        self.sio.on("room:join", self._join)
        self.sio.on("room:leave", self._leave)
        self.sio.on("*", self._any)
        self.url = ""

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        handshake = {
            "cookie": environ.get("HTTP_COOKIE"),
            "authorization": environ.get("HTTP_AUTHORIZATION"),
            "auth": auth,
        }
        if not self.admits(handshake):
            return False
        self.handshakes[sid] = handshake
        await self.connections.put(sid)
        return True

    async def _disconnect(self, sid: str, reason: Any = None) -> None:
        await self.disconnections.put(sid)

    async def _join(self, sid: str, data: dict[str, Any]) -> None:
        await self.sio.enter_room(sid, f"room:{data['room_id']}")
        await self.client_events.put(("room:join", (data,)))

    async def _leave(self, sid: str, data: dict[str, Any]) -> None:
        await self.sio.leave_room(sid, f"room:{data['room_id']}")
        await self.client_events.put(("room:leave", (data,)))

    async def _any(self, event: str, sid: str, *args: Any) -> Any:
        self.event_sids.append(sid)
        await self.client_events.put((event, args))
        if event == "echo":
            return args[0] if len(args) == 1 else args
        return None

    async def _room(self, request: web.Request) -> web.Response:
        room_id = request.match_info["room_id"]
        self.rest_paths.append((request.raw_path, room_id))
        self.rest_asked.put_nowait(room_id)
        self.rest_headers.append(dict(request.headers))
        if not self.rest_allows(dict(request.headers)):
            return web.json_response({"error": "forbidden"}, status=403)
        if self.rest_hook is not None:
            answer = await self.rest_hook(room_id)
            if answer is not None:
                return answer  # type: ignore[no-any-return]
        room = self.data.rooms.get(room_id)
        if room is None or not room.created:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(room.rest_body(self.rest_shape))

    async def new_customer(
        self, room_id: str, phone: str, name: str | None, text: str
    ) -> dict[str, Any]:
        """ensureRoom() then handleIncomingMessage(), as the seed describes."""
        room = self.data.add_room(room_id, phone, name)
        room.created = True
        await self.sio.emit("new_room", room.new_room_payload())
        return await self.message(room_id, text)

    async def message(self, room_id: str, text: str, user_id: str | None = None) -> dict[str, Any]:
        message = self.data.save_message(room_id, text, user_id)
        await self.sio.emit("room:new_message", message, to=f"room:{room_id}")
        await self.sio.emit("new_message", message)
        return message


@pytest.fixture
async def backend(aiohttp_server: Any) -> StubBackend:
    stub = StubBackend()
    server = await aiohttp_server(stub.app)
    stub.url = f"http://127.0.0.1:{server.port}"
    return stub


@pytest.fixture
def proxy_settings() -> dict[str, Any]:
    """Extra settings for the proxy under test (dotted names)."""
    return {}


@pytest.fixture
async def proxy(backend: StubBackend, proxy_settings: dict[str, Any]) -> AsyncIterator[Running]:
    configure_logging("warning", "console")
    settings = load_settings(
        None,
        **{
            "upstream.mode": "shared",
            "upstream.url": backend.url,
            "upstream.reconnect_delay": 0.05,
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
            **proxy_settings,
        },
    )
    async with running(settings) as proxy:
        await asyncio.wait_for(backend.connections.get(), 10)
        yield proxy


# The offset enricher appends to every event for connection state recovery
# (enricher.recovery: "<epoch>.<n>"); socket.io-client takes it as the last argument.
OFFSET = re.compile(r"[0-9a-f]{8}\.[0-9]+")


class LeavingClient(socketio.AsyncClient):  # type: ignore[misc]
    """python-socketio's client, whose ``disconnect()`` says so as socket.io-client's does:
    its DISCONNECT packet is written before the connection closes (python-socketio's closes
    the WebSocket at once, and the server sees a lost connection, one it may recover)."""

    async def disconnect(self) -> None:
        if self.connected and self.eio.state == "connected":
            for namespace in self.namespaces:
                leaving = self.packet_class(packet.DISCONNECT, namespace=namespace)
                await self.eio.send(leaving.encode())
            await self.eio.queue.join()  # written
        await super().disconnect()


class BrowserClient:
    """A python-socketio client that records what it receives: each event's arguments
    without the recovery offset, which goes to ``offsets`` (python-socketio's client does
    not know of it; socket.io-client keeps the last one)."""

    def __init__(self) -> None:
        self.sio = LeavingClient(reconnection=False)
        self.events: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()
        self.offsets: list[str] = []

        async def any_event(event: str, *args: Any) -> None:
            if args and isinstance(args[-1], str) and OFFSET.fullmatch(args[-1]):
                self.offsets.append(args[-1])
                args = args[:-1]
            await self.events.put((event, args))

        self.sio.on("*", any_event)

    async def next(self, *names: str, timeout: float = 5.0) -> tuple[str, tuple[Any, ...]]:
        """The next event with one of ``names`` (others are skipped)."""
        while True:
            event, args = await asyncio.wait_for(self.events.get(), timeout)
            if not names or event in names:
                return event, args


@pytest.fixture
async def browsers(proxy: Running) -> AsyncIterator[Callable[[int], Any]]:
    opened: list[BrowserClient] = []

    async def open_browsers(n: int) -> list[BrowserClient]:
        new = [BrowserClient() for _ in range(n)]
        await asyncio.gather(
            *(
                b.sio.connect(f"http://127.0.0.1:{proxy.public_port}", transports=["websocket"])
                for b in new
            )
        )
        opened.extend(new)
        return new

    yield open_browsers
    await asyncio.gather(*(b.sio.disconnect() for b in opened))
