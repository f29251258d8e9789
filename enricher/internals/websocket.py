"""A browser's WebSocket as python-engineio's aiohttp driver uses it (the class its driver
table names: made with the socket's handler, called with the environ; ``wait``, ``send``,
``close``), with what the direct broadcast path needs: its transport, and the frames of
one loop iteration written together (:class:`WriteBatch`).

A direct frame is never compressed, which is valid on a connection that negotiated
permessage-deflate too (RFC 7692: an uncompressed message has RSV1 clear).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import WSCloseCode, WSMsgType, web
from engineio import packet as eio_packet

if TYPE_CHECKING:
    from .engine import SocketQueue

NOOP = eio_packet.Packet(eio_packet.NOOP).encode()
# Above this many bytes waiting in a socket's transport, its events are queued instead.
WRITE_BUFFER_LIMIT = 64 * 1024


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final, uncompressed WebSocket text frame (RFC 6455, section 5.2)."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


# An engine.io packet's type, the first character of a text frame ("" is none).
_ENGINEIO_TYPES = frozenset("0123456")


class WriteBatch:
    """The sockets with frames batched in this loop iteration; :meth:`flush` writes them
    at its end (scheduled with ``call_soon`` by the first frame, it runs after every
    callback already due, among them the rest of a burst's fan-outs)."""

    def __init__(self) -> None:
        self._sockets: list[WebSocket] = []

    def add(self, websocket: WebSocket) -> None:
        if not self._sockets:
            asyncio.get_running_loop().call_soon(self.flush)
        self._sockets.append(websocket)

    def flush(self) -> None:
        sockets, self._sockets = self._sockets, []
        for websocket in sockets:
            websocket.flush()


class WebSocket:
    """python-engineio's aiohttp WebSocket (the class its driver table names: made with the
    socket's handler, called with the environ; ``wait``, ``send``, ``close``), with
    permessage-deflate as a setting and the state the direct path needs: its transport,
    whether a send is in progress, and the frames batched for it (:meth:`write_frame`).
    Slotted: one is kept for each browser."""

    __slots__ = (
        "_sock",
        "batched",
        "batched_size",
        "close_code",
        "handler",
        "queue",
        "sending",
        "server",
        "transport",
    )
    compress: ClassVar[bool] = False
    sockets: ClassVar[dict[str, WebSocket]] = {}  # one per server: :func:`websocket_class`
    batch: ClassVar[WriteBatch] = WriteBatch()  # one per server too

    def __init__(self, handler: Any, server: Any) -> None:
        self.handler = handler  # the engine.io socket's _websocket_handler
        self.server = server
        self._sock: web.WebSocketResponse = None  # type: ignore[assignment]  # once called
        self.sending = 0
        self.transport: Any = None
        self.close_code: int | None = None  # the browser's, when it closed the WebSocket
        self.batched: list[bytes] | None = None
        self.batched_size = 0
        # The browser's engine.io queue from its upgrade until its socket closes: while
        # there is one, frames may be written directly (:meth:`writable`).
        self.queue: SocketQueue | None = None

    def writable(self) -> bool:
        """Whether a frame written now is the next thing this browser receives: its socket
        is upgraded and not closing, nothing queued for it is unwritten or being sent, and
        its transport has room."""
        queue = self.queue
        if queue is None or queue.unwritten or self.sending:
            return False
        transport = self.transport
        return (
            transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() + self.batched_size <= WRITE_BUFFER_LIMIT
        )

    def write_frame(self, frame: bytes) -> None:
        """Write a frame after those already written or batched, with the others of this
        loop iteration, or at once when they make :data:`WRITE_BUFFER_LIMIT`."""
        if self.batched is None:
            self.batched = [frame]
            self.batch.add(self)
        else:
            self.batched.append(frame)
        self.batched_size += len(frame)
        if self.batched_size >= WRITE_BUFFER_LIMIT:
            self.flush()

    def flush(self) -> None:
        """Write what is batched for this socket now (nothing once it is closing)."""
        frames = self.batched
        if frames is None:
            return
        self.batched, self.batched_size = None, 0
        transport = self.transport
        if transport is None or transport.is_closing() or self._sock.closed:
            return
        transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=self.compress
        )
        await self._sock.prepare(request)
        self.transport = request.transport
        eio_sid = self.handler.__self__.sid
        self.sockets[eio_sid] = self
        try:
            await self.handler(self)
        finally:
            if self.sockets.get(eio_sid) is self:
                del self.sockets[eio_sid]
        return self._sock

    def too_large(self, eio_sid: str, detail: str) -> None:
        """Told of each message refused for its size (aiohttp closes the connection, 1009);
        :func:`websocket_class` sets it."""

    def not_engineio(self, eio_sid: str) -> None:
        """Told of a text frame that is no engine.io packet (the connection is closed, as a
        Node server closes it; python-engineio would log a traceback); set as too_large."""

    async def wait(self) -> str | bytes:
        msg = await self._sock.receive()
        if msg.type == WSMsgType.TEXT and msg.data[:1] not in _ENGINEIO_TYPES:
            self.not_engineio(self.handler.__self__.sid)
            self.flush()
            await self._sock.close()
            msg = await self._sock.receive()  # what the closed WebSocket gives: CLOSED
        if msg.type == WSMsgType.ERROR and getattr(msg.data, "code", None) == (
            WSCloseCode.MESSAGE_TOO_BIG
        ):
            self.too_large(self.handler.__self__.sid, str(msg.data))
        if msg.type == WSMsgType.CLOSE:
            self.close_code = msg.data
        if not isinstance(msg.data, bytes | str):
            if self.handler.__self__.upgraded:
                # None ends python-engineio's read loop as well; an exception would too, but
                # its traceback holds the handler's frame, whose wait task holds the
                # exception: a reference cycle keeping this connection (request, buffers)
                # alive until the next full garbage collection.
                return None  # type: ignore[return-value]
            raise OSError()  # during an upgrade python-engineio waits for this
        return msg.data

    async def close(self) -> None:
        self.flush()
        await self._sock.close()
        exception = self._sock.exception()
        if exception is not None:
            # aiohttp keeps the error of a close on a closing transport; its traceback
            # holds close()'s frame, which holds the response: a reference cycle.
            exception.__traceback__ = None

    async def send(self, message: str | bytes) -> None:
        if message == NOOP:
            # python-engineio queues a NOOP to end a poll when the upgrade completes, and
            # answers the UPGRADE packet with one: over the WebSocket, neither has a use,
            # and a Node server sends none (a client counting packets sees the difference).
            return
        self.flush()
        self.sending += 1
        try:
            if isinstance(message, bytes):
                await self._sock.send_bytes(message)
            else:
                await self._sock.send_str(message)
        finally:
            self.sending -= 1


def websocket_upgrade(connection: str | None, upgrade: str | None) -> bool:
    """Whether a request's ``Connection`` and ``Upgrade`` headers ask for a WebSocket, as
    python-engineio tells: "upgrade" among Connection's tokens, Upgrade "websocket"."""
    tokens = {token.strip() for token in (connection or "").lower().split(",")}
    return "upgrade" in tokens and (upgrade or "").lower() == "websocket"


def websocket_class(
    *,
    compress: bool,
    too_large: Callable[[str, str], None] = lambda eio_sid, detail: None,
    not_engineio: Callable[[str], None] = lambda eio_sid: None,
) -> type[WebSocket]:
    """A :class:`WebSocket` class of its own for one server: its settings, its sockets."""
    attributes = {
        "compress": compress,
        "sockets": {},
        "too_large": staticmethod(too_large),
        "not_engineio": staticmethod(not_engineio),
        "batch": WriteBatch(),
        "__slots__": (),
    }
    return type("WebSocket", (WebSocket,), attributes)
