"""Broadcasts to browsers: one WebSocket frame built once, written to every idle socket.

python-socketio sends a broadcast through one asyncio task per recipient, which queues the
packet on the socket's engine.io queue and wakes the socket's writer task, which frames and
writes it. A server-to-client text frame is the same bytes for every recipient, so this
module builds it once and writes it straight to each socket's transport when nothing is
waiting in front of it on that socket: nothing queued for it is still unwritten (see
:class:`Unwritten`), its writer is not in the middle of a send, and its transport's buffer
is below :data:`WRITE_BUFFER_LIMIT`. Every other
recipient (polling, upgrading, busy, slow) takes python-socketio's own path, so the order of
events on each socket is kept.

Direct frames are not written one by one: each socket's frames of one loop iteration are
written together when the iteration ends (:class:`WriteBatch`), one system call per socket
however many events it got; when enricher keeps up that is one frame, when it is behind (a
burst, a new room's snapshot and its first message) several. Anything else written to that
socket (python-engineio's writer, a close) first writes what is batched for it.

A direct frame is never compressed, which is valid on a connection that negotiated
permessage-deflate too (RFC 7692: an uncompressed message has RSV1 clear).

A browser that stops reading (a stalled network, a frozen tab) gets its events queued;
once ``max_queued`` of them wait, it is dropped: its connection is cut, its queue freed,
and socket.io-client reconnects by itself when it can. Nobody else waits for it.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import engineio.async_socket
import engineio.exceptions
import socketio
import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from bidict import ValueDuplicationError
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from .recovery import Recovery
from .shared import Entry, SharedLog, identity

log = structlog.get_logger("enricher.downstream")

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


# How long after the upgrade probe a poll still pending is ended with a NOOP: Node's
# engine.io checks every 100 ms; python-engineio ends it at once.
UPGRADE_NOOP_DELAY = 0.1


class Unwritten(eio_packet.Packet):  # type: ignore[misc]
    """A packet on a browser's queue, counted there (``SocketQueue.unwritten``) until it is
    encoded for writing. The socket's writer takes packets off the queue a loop iteration
    or more before it writes them, so an empty queue does not mean nothing is on its way."""

    def __init__(self, packet_type: int, data: Any, queue: SocketQueue) -> None:
        super().__init__(packet_type, data)
        self._queue: SocketQueue | None = queue
        queue.unwritten += 1

    def encode(self, b64: bool = False) -> Any:
        queue, self._queue = self._queue, None
        if queue is not None:  # encoded right before its write, once
            queue.unwritten -= 1
        return super().encode(b64)


class SocketQueue:
    """A browser's engine.io queue (the server's ``create_queue``), which counts the
    packets put on it until they are written (:class:`Unwritten`), whoever put them there
    (enricher, python-socketio, python-engineio): a direct write waits for all of them.

    It is ``asyncio.Queue`` as python-engineio uses it (unbounded; ``put``, ``get``,
    ``task_done``, ``join``), without its storage while it is empty: ``asyncio.Queue``
    makes four deques up front, about 3 KiB for each browser, for a queue that is empty
    nearly all the time (broadcasts are written directly).

    Its NOOP, the one that ends a pending poll during the upgrade to WebSocket, is queued
    100 ms after the probe, as Node's server does: a poll that ends with a message
    meanwhile needs none (it then goes over the WebSocket, which does not send it)."""

    __slots__ = ("_getters", "_items", "_joiners", "_unfinished", "on_put", "unwritten")

    def __init__(self) -> None:
        self._items: collections.deque[Any] | None = None
        self._getters: list[asyncio.Future[None]] | None = None
        self._joiners: list[asyncio.Future[None]] | None = None
        self._unfinished = 0
        self.unwritten = 0
        self.on_put: Callable[[], None] | None = None  # told of each packet put

    def qsize(self) -> int:
        return len(self._items) if self._items is not None else 0

    def empty(self) -> bool:
        return self._items is None

    def full(self) -> bool:
        return False

    def message(self, data: str | bytes) -> None:
        """Queue one engine.io MESSAGE."""
        self._put(Unwritten(eio_packet.MESSAGE, data, self))

    def put_nowait(self, item: Any) -> None:
        if isinstance(item, eio_packet.Packet) and not isinstance(item, Unwritten):
            item = Unwritten(item.packet_type, item.data, self)
        self._put(item)

    async def put(self, item: Any) -> None:
        if isinstance(item, eio_packet.Packet) and item.packet_type == eio_packet.NOOP:
            asyncio.get_running_loop().call_later(UPGRADE_NOOP_DELAY, self.put_nowait, item)
            return
        self.put_nowait(item)

    def _put(self, item: Any) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)
        self._unfinished += 1
        self._wake_getter()
        if self.on_put is not None:
            self.on_put()

    def _wake_getter(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return

    def get_nowait(self) -> Any:
        items = self._items
        if items is None:
            raise asyncio.QueueEmpty
        item = items.popleft()
        if not items:
            self._items = None
        return item

    async def get(self) -> Any:
        while self._items is None:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:  # asyncio.Queue's: a wake-up not taken goes to the next
                getter.cancel()
                if self._getters is not None and getter in self._getters:
                    self._getters.remove(getter)
                if self._items is not None and not getter.cancelled():
                    self._wake_getter()
                raise
        return self.get_nowait()

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._joiners is not None:
            for joiner in self._joiners:
                if not joiner.done():
                    joiner.set_result(None)
            self._joiners = None

    async def join(self) -> None:
        if self._unfinished:
            joiner = asyncio.get_running_loop().create_future()
            if self._joiners is None:
                self._joiners = []
            self._joiners.append(joiner)
            await joiner


# Closes under way of browsers that stopped answering pings (EngineSocket._pong_due).
_closing: set[asyncio.Future[None]] = set()


class EngineSocket(engineio.async_socket.AsyncSocket):  # type: ignore[misc]
    """python-engineio's socket, whose polling GET during the upgrade to WebSocket waits for
    packets like any other poll, as with a Node server (python-engineio answers it with a
    NOOP at once, a packet a Node server does not send).

    An idle browser costs it no task: python-engineio keeps four for each WebSocket, about
    1.5 KiB each with what they hold: one sleeping through the ping interval to send the
    next ping, a writer waiting for packets all the connection long, and the waits of the
    writer and of the reader under ``asyncio.wait_for`` (on Python 3.11 a task each). Here a
    timer sends the ping, the connection's own task reads (without a timeout: a browser that
    stops answering pings is closed by python-engineio's heartbeat check), and a writer
    runs only while something is queued (:meth:`_write_queued`); the behaviour is
    python-engineio's."""

    last_ping: float | None
    connected: bool
    queue: SocketQueue
    _websocket: WebSocket | None = None  # once upgraded, while open (see _write_queued)
    _writer: asyncio.Future[None] | None = None  # writing what is queued, while something is

    def schedule_ping(self) -> None:
        if self.last_ping:  # as python-engineio's: once the previous ping was answered
            self.last_ping = None
            asyncio.get_running_loop().call_later(self.server.ping_interval, self._ping)

    def _ping(self) -> None:
        if not self.closing and not self.closed:
            self.last_ping = sent = time.time()
            self.queue.put_nowait(eio_packet.Packet(eio_packet.PING))
            asyncio.get_running_loop().call_later(self.server.ping_timeout, self._pong_due, sent)

    def _pong_due(self, sent: float) -> None:
        """The ping sent at ``sent`` is still unanswered a ping timeout later: the browser
        is gone, and closed now, as a Node server closes it (python-engineio finds it at its
        next heartbeat check, up to a ping timeout later, or when a packet is sent to it,
        inside the broadcast sending it)."""
        if self.last_ping == sent and not self.closing and not self.closed:
            self.server.logger.info("%s: Client is gone, closing socket", self.sid)
            closing = asyncio.ensure_future(
                self.close(wait=False, reason=self.server.reason.PING_TIMEOUT)
            )
            _closing.add(closing)  # the loop keeps only a weak reference
            closing.add_done_callback(_closing.discard)

    async def send(self, pkt: Any) -> None:
        """python-engineio's, without its heartbeat check (:meth:`_pong_due` does it)."""
        if self.closed:
            raise engineio.exceptions.SocketIsClosedError()
        await self.queue.put(pkt)

    async def _websocket_handler(self, ws: WebSocket) -> None:
        """python-engineio's, reading in the connection's own task: it reads each message
        in a task of its own under ``asyncio.wait_for``, with a timeout that holds a timer
        for each browser all the time. Ends when the browser closes, stops answering pings
        (python-engineio's heartbeat check closes its socket: :meth:`close`), or sends a
        message over the size limit (aiohttp refuses it).

        Safe to cancel (aiohttp cancels a request's handler when its client leaves): a
        cancelled wait is the end of the connection, and what a browser's message or the
        end set going runs to its end regardless (:meth:`_receive`, :meth:`_end`)."""
        if not isinstance(ws, WebSocket):  # another server of this process (a test's)
            return await super()._websocket_handler(ws)
        server = self.server
        if self.connected:  # the socket was connected by polling: this is the upgrade
            self.upgrading = True  # hold packet sends during the upgrade
            try:
                upgraded = await self._upgrade_probe(ws)
            except asyncio.CancelledError:  # the browser left
                upgraded = False
            if upgraded and (self.closing or self.closed):  # closed during the probe
                await ws.close()  # close() saw no WebSocket to close
                upgraded = False
            if not upgraded:
                self.upgrading = False
                return
            self.upgraded, self.upgrading = True, False
        else:
            self.connected = self.upgraded = True

        self._websocket = ws  # from now on what is queued is written by _write_queued
        self.queue.on_put = self._queued
        ws.queue = self.queue  # and broadcasts may be written directly
        self._queued()  # what was queued during the upgrade
        server.logger.info("%s: Upgrade to websocket successful", self.sid)
        while True:  # python-engineio's heartbeat check closes a browser gone silent (close)
            try:
                message = await ws.wait()
            except (Exception, asyncio.CancelledError):
                break
            if message is None or not await self._receive(message):  # closed by the browser
                break
        ws.queue = None
        ending = asyncio.ensure_future(self._end())
        try:
            await asyncio.shield(ending)
        except asyncio.CancelledError:  # the browser left meanwhile: its end goes on
            await ending

    async def _receive(self, message: str | bytes) -> bool:
        """Handle one message of the browser's; False when that ends the connection. A
        PONG is handled at once; anything else, which may wait (a Socket.IO CONNECT on its
        credentials, a CLOSE on the disconnect handlers), is handled to its end even if the
        browser leaves meanwhile."""
        try:
            pkt = eio_packet.Packet(encoded_packet=message)
            if pkt.packet_type == eio_packet.PONG:
                await self.receive(pkt)
                return True
            handling = asyncio.ensure_future(self.receive(pkt))
            try:
                await asyncio.shield(handling)
            except asyncio.CancelledError:  # the browser left
                await handling
                return False
        except engineio.exceptions.UnknownPacketError:
            pass
        except engineio.exceptions.SocketIsClosedError:
            self.server.logger.info("Receive error -- socket is closed")
            return False
        except Exception:  # logged; the connection goes on, as python-engineio's
            self.server.logger.exception("Unknown receive error")
        return True

    async def _end(self) -> None:
        """The end of the browser's WebSocket: what is queued is written, then it is
        closed, and the socket with it (python-engineio's disconnect handlers)."""
        self.queue.put_nowait(None)
        if self._writer is not None:
            await self._writer
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)

    def _queued(self) -> None:
        """Something was queued for the browser: written by a task of its own, started now
        if none is under way (none while nothing is queued: most of the time, for most
        browsers, since broadcasts are written directly)."""
        if self._writer is None and self._websocket is not None and not self.queue.empty():
            self._writer = asyncio.ensure_future(self._write_queued(self._websocket))

    async def _write_queued(self, ws: WebSocket) -> None:
        """python-engineio's writer, until the queue is empty: each packet in order, with
        backpressure; None (the end of the connection) closes the WebSocket, as does a
        write that fails, and nothing queued after that is written."""
        queue = self.queue
        try:
            while not queue.empty():
                pkt = queue.get_nowait()
                queue.task_done()
                if pkt is None:
                    break
                await ws.send(pkt.encode())
            else:
                return
        except Exception:
            pass
        finally:
            self._writer = None
        self._websocket = ws.queue = None
        queue.on_put = None
        await ws.close()

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        """python-engineio's; from its start nothing more is written directly, and once
        upgraded the WebSocket is closed after the CLOSE packet (socket.io-client's
        WebSocket transport ignores that packet, and python-engineio's heartbeat check,
        which ends a browser gone silent, ends it with this close only)."""
        websocket, closing = self._websocket, self.closing or self.closed
        if websocket is not None:
            websocket.queue = None
        await super().close(wait=False, abort=abort, reason=reason)
        if websocket is not None and not closing:
            self.queue.put_nowait(None)  # written after what is queued: the WebSocket closed
        if wait:
            await self.queue.join()

    async def _upgrade_probe(self, ws: WebSocket) -> bool:
        """python-engineio's upgrade: the PING "probe", answered, then the UPGRADE packet;
        False when the browser does not complete it."""
        try:
            message = await ws.wait()
        except OSError:
            return False
        probe = eio_packet.Packet(encoded_packet=message)
        if probe.packet_type != eio_packet.PING or probe.data != "probe":
            self.server.logger.info("%s: Failed websocket upgrade, no PING packet", self.sid)
            return False
        await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
        await self.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
        try:
            message = await ws.wait()
        except OSError:
            return False
        upgrade = eio_packet.Packet(encoded_packet=message)
        if upgrade.packet_type != eio_packet.UPGRADE:
            self.server.logger.info(
                "%s: Failed websocket upgrade, expected UPGRADE packet, received %s instead.",
                self.sid,
                message,
            )
            return False
        return True

    async def poll(self) -> list[Any]:
        """python-engineio's: the packets to send, once there is one (QueueEmpty after
        a ping interval and timeout without any, or when cancelled)."""
        try:
            async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
                packets = [await self.queue.get()]
        except (TimeoutError, asyncio.CancelledError):
            raise engineio.exceptions.QueueEmpty() from None
        self.queue.task_done()
        if packets == [None]:
            return []
        while not self.queue.empty():
            pkt = self.queue.get_nowait()
            self.queue.task_done()
            if pkt is None:
                self.queue.put_nowait(None)
                break
            packets.append(pkt)
        return packets

    def handle_get_request(self, environ: dict[str, Any]) -> Awaitable[Any]:
        """python-engineio's, handing a WebSocket's request on as its WebSocket's own
        coroutine (python-engineio's frames for the upgrade, and this one, would be kept
        for the connection's life), and with a poll during the upgrade waiting for packets
        (python-engineio answers it with a NOOP at once)."""
        connection = environ.get("HTTP_CONNECTION", "").lower()
        if websocket_upgrade(connection, environ.get("HTTP_UPGRADE")):
            if self.upgraded:
                raise OSError("Socket has been upgraded already")
            websocket = self.server._async["websocket"](self._websocket_handler, self.server)
            return websocket(environ)  # type: ignore[no-any-return]
        if self.upgrading and not self.upgraded and "upgrade" not in connection:
            return self._poll_upgrading()
        return super().handle_get_request(environ)  # type: ignore[no-any-return]

    async def _poll_upgrading(self) -> list[Any]:
        try:
            return await self.poll()
        except engineio.exceptions.QueueEmpty:  # as python-engineio's own poll
            await self.close(wait=False, reason=self.server.reason.TRANSPORT_ERROR)
            raise


def websocket_upgrade(connection: str | None, upgrade: str | None) -> bool:
    """Whether a request's ``Connection`` and ``Upgrade`` headers ask for a WebSocket, as
    python-engineio tells: "upgrade" among Connection's tokens, Upgrade "websocket"."""
    tokens = {token.strip() for token in (connection or "").lower().split(",")}
    return "upgrade" in tokens and (upgrade or "").lower() == "websocket"


def node_engine(eio: Any) -> None:
    """An engine.io server of python-engineio's that sends the packets a Node server sends
    (:class:`SocketQueue`, :class:`EngineSocket`)."""
    eio.create_queue = SocketQueue
    engineio.async_socket.AsyncSocket = EngineSocket  # python-engineio makes each with it


# Longest wait for the CLOSE packet of a browser enricher disconnects to be written.
CLOSE_TIMEOUT = 1.0


async def close_engine_socket(eio: Any, websockets: dict[str, WebSocket], socket: Any) -> None:
    """Close one browser's connection as python-engineio does (its disconnect handlers,
    a CLOSE packet, written after what was queued before it), without waiting more than
    :data:`CLOSE_TIMEOUT` for the write: a browser that stopped reading or polling, or whose
    connection is half closed already, would hold up the caller (the shutdown, an expiry)."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await socket.close(reason=eio.reason.SERVER_DISCONNECT)
    except TimeoutError:
        websocket = websockets.get(socket.sid)
        if websocket is not None and websocket.transport is not None:
            websocket.transport.abort()
    eio.sockets.pop(socket.sid, None)


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


class BroadcastManager(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's manager, with broadcasts written directly where they can be and
    each browser's queue bounded.

    ``count(direct, queued)`` is told, per emit, how many recipients took each path;
    ``dropped()``, of each browser dropped for its backlog. With ``recovery``, every
    event without an ack to namespace ``/`` is stamped with its offset (once, for every
    recipient) and kept for browsers that may come back.
    """

    def __init__(
        self,
        websockets: dict[str, WebSocket],
        *,
        direct: bool,
        max_queued: int = 1000,
        count: Callable[[int, int], None] = lambda direct, queued: None,
        dropped: Callable[[], None] = lambda: None,
        recovery: Recovery | None = None,
        shared: SharedLog | None = None,
    ) -> None:
        super().__init__()
        self.recovery = recovery
        # With the replicas' shared sequence, broadcasts are appended to it and delivered
        # when read back (:meth:`deliver_entry`), stamped with their number there.
        self.shared = shared if recovery is not None else None
        # Browsers whose connection enricher closes on purpose: not to be recovered.
        self.unrecoverable: set[str] = set()
        # The sid a connection being registered takes (a recovered session's), by eio sid.
        self._reused: dict[str, str] = {}
        self._websockets = websockets
        self._direct = direct
        self._max_queued = max_queued
        self._count = count
        self._dropped = dropped
        self._dropping: set[str] = set()  # eio sids being closed for their backlog
        self._closing: set[asyncio.Future[None]] = set()  # their close tasks, kept alive

    @property
    def max_replay(self) -> int:
        """Most missed events a returning browser is given: half what may wait for it, so
        that what comes live meanwhile does not get it dropped."""
        return self._max_queued // 2

    async def emit(  # type: ignore[no-untyped-def]
        self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, **kwargs
    ):
        room = to or room
        stamped = self.recovery is not None and namespace == "/"
        if callback is not None or (namespace not in self.rooms and not stamped):
            return await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs
            )
        if isinstance(data, tuple):
            data = list(data)
        elif data is not None:
            data = [data]
        else:
            data = []
        encoded = self.server.packet_class(
            sio_packet.EVENT, namespace=namespace, data=[event, *data]
        ).encode()
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        if self.shared is not None and namespace == "/":
            text, *attachments = encoded if isinstance(encoded, list) else [encoded]
            self.shared.append(
                text,
                _rooms(room),
                [sid for sid in skip if sid is not None],
                attachments,
                identity=identity(event, data),
                # to one of this replica's browsers: its own, never merged with another's
                unique=isinstance(room, str) and self.eio_sid_from_sid(room, "/") is not None,
            )
            return None
        if isinstance(encoded, list):  # binary attachments: several engine.io packets
            if not stamped:
                return await super().emit(
                    event, data, namespace, room=room, skip_sid=skip_sid, **kwargs
                )
            text, *attachments = encoded
            text = self._stamp(text, room, skip, attachments)
            return await self._deliver_binary(text, attachments, namespace, room, skip)
        if stamped:
            encoded = self._stamp(encoded, room, skip)
        if namespace in self.rooms:
            await self._deliver(encoded, namespace, room, skip)

    @property
    def backlogs(self) -> int:
        """Browsers with packets on their way through their queue now."""
        return sum(1 for socket in self.server.eio.sockets.values() if socket.queue.unwritten)

    async def emit_encoded(self, encoded: str, room: str | None = None) -> None:
        """Broadcast a Socket.IO packet that is already text (namespace ``/``, no ack)."""
        if self.shared is not None:
            self.shared.append(encoded, _rooms(room), ())
            return
        if self.recovery is not None:
            encoded = self._stamp(encoded, room, [None])
        if "/" in self.rooms:
            await self._deliver(encoded, "/", room, [None])

    def _stamp(
        self, encoded: str, room: Any, skip: list[Any], attachments: list[bytes] | None = None
    ) -> str:
        assert self.recovery is not None
        encoded = encoded.rstrip()
        if not encoded.endswith("]"):  # not an event's arguments: passed on as it came
            return encoded
        return self.recovery.stamp(
            encoded, _rooms(room), [sid for sid in skip if sid is not None], attachments or ()
        )

    async def deliver_entry(self, entry: Entry) -> None:
        """An entry of the shared sequence, read back: kept, stamped with its number, and
        delivered to this replica's browsers it is meant for."""
        assert self.recovery is not None
        stamped = self.recovery.record(
            entry.number, entry.packet, entry.rooms, entry.skip, entry.attachments
        )
        if entry.packet is not None:  # a packet that cannot take an offset goes as it is
            packet = stamped or entry.packet
            await self.deliver_direct(Entry(0, packet, entry.rooms, entry.skip, entry.attachments))

    async def deliver_direct(self, entry: Entry) -> None:
        """A broadcast delivered as it is (unnumbered: the shared sequence is away)."""
        if entry.packet is None or "/" not in self.rooms:
            return
        skip = list(entry.skip)
        if entry.attachments:
            await self._deliver_binary(
                entry.packet, list(entry.attachments), "/", entry.rooms, skip
            )
        else:
            await self._deliver(entry.packet, "/", entry.rooms, skip)

    async def _deliver_binary(
        self, text: str, attachments: list[bytes], namespace: str, room: Any, skip: list[Any]
    ) -> None:
        """A binary event (its text, then its attachments) through each browser's queue."""
        recipients = [
            eio_sid for sid, eio_sid in self.get_participants(namespace, room) if sid not in skip
        ]
        for eio_sid in recipients:
            await self.send_raw(eio_sid, text, attachments)

    async def send_raw(self, eio_sid: str, text: str, attachments: Any = ()) -> None:
        """One Socket.IO packet already encoded, through the browser's queue (where no
        direct write overtakes it)."""
        for part in (text, *attachments):
            await self.server._send_eio_packet(eio_sid, eio_packet.Packet(eio_packet.MESSAGE, part))

    def queue_now(self, engine_socket: Any, eio_sid: str, text: str, attachments: Any = ()) -> None:
        """Like :meth:`send_raw`, without yielding to the loop: whatever is sent to this
        browser after this call goes behind it."""
        for part in (text, *attachments):
            engine_socket.queue.message(part)

    def reuse_sid(self, eio_sid: str, sid: str) -> None:
        """The next :meth:`pre_connect` of ``eio_sid`` registers it as ``sid``."""
        self._reused[eio_sid] = sid

    async def pre_connect(self, eio_sid, namespace):  # type: ignore[no-untyped-def]
        sid = self._reused.pop(eio_sid, None)
        if sid is None:
            return await super().pre_connect(eio_sid, namespace)
        # python-socketio's own, with the sid given instead of a new one
        try:
            self.basic_enter_room(sid, namespace, None, eio_sid=eio_sid)
        except ValueDuplicationError:
            return None
        self.basic_enter_room(sid, namespace, sid, eio_sid=eio_sid)
        self.pending_connect.setdefault(namespace, []).append(sid)
        return sid

    async def _deliver(self, encoded: str, namespace: str, room: Any, skip: list[Any]) -> None:
        frame = text_frame(b"4" + encoded.encode())  # "4": an engine.io MESSAGE
        queued: list[tuple[str, str]] = []
        direct = 0
        websockets = self._websockets if self._direct else {}
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            websocket = websockets.get(eio_sid)
            if websocket is not None and websocket.writable():
                websocket.write_frame(frame)
                direct += 1
            else:
                queued.append((sid, eio_sid))
        engine_sockets = self.server.eio.sockets
        for sid, eio_sid in queued:
            engine_socket = engine_sockets.get(eio_sid)
            if engine_socket is None:  # gone meanwhile (dropped above, say): nothing to send
                continue
            if engine_socket.queue.qsize() >= self._max_queued:
                await self._drop(sid, eio_sid, engine_socket)
            else:
                packet = eio_packet.Packet(eio_packet.MESSAGE, encoded)
                await self.server._send_eio_packet(eio_sid, packet)
        self._count(direct, len(queued))

    async def _drop(self, sid: str, eio_sid: str, engine_socket: Any) -> None:
        """Cut a browser whose backlog reached the limit; it reconnects when it can."""
        if engine_socket.closing or engine_socket.closed or eio_sid in self._dropping:
            return
        log.warning(
            "browser_dropped", reason="backlog", queued=engine_socket.queue.qsize(), sid=sid
        )
        self._dropped()
        self.unrecoverable.add(sid)  # its backlog is not replayed either
        websocket = self._websockets.get(eio_sid)
        if websocket is not None and websocket.transport is not None:
            websocket.transport.abort()  # what is buffered for it goes too
        # Closed in a task of its own: the close runs the disconnect handlers, which may
        # wait on the backend, and the broadcast under way must reach the others first
        # (another one started meanwhile would overtake it at the browsers still to go).
        self._dropping.add(eio_sid)
        task = asyncio.ensure_future(self._close(eio_sid, engine_socket))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, eio_sid: str, engine_socket: Any) -> None:
        try:
            await engine_socket.close(
                wait=False, abort=True, reason=self.server.eio.reason.SERVER_DISCONNECT
            )
        finally:
            self._dropping.discard(eio_sid)


def _rooms(room: Any) -> list[str] | None:
    """An emit's ``to``/``room`` as a list of rooms (None: everyone)."""
    return None if room is None else [room] if isinstance(room, str) else list(room)
