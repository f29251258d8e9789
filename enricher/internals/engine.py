"""python-engineio's server socket, made to behave as a Node server's: :class:`EngineSocket`
(pings on a timer, no task for an idle browser, the upgrade as Node does it) and
:class:`SocketQueue` (the browser's queue, counting what is on its way); :func:`node_engine`
puts them, the WebSocket class and the request translation in an engine.io server.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

import engineio.async_socket
import engineio.exceptions
from engineio import packet as eio_packet

from ..background import Background
from .websocket import WebSocket, websocket_upgrade

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
_closing = Background()


class EngineSocket(engineio.async_socket.AsyncSocket):  # type: ignore[misc]
    """python-engineio's socket, whose polling GET during the upgrade to WebSocket waits for
    packets like any other poll, as with a Node server (python-engineio answers it with a
    NOOP at once, a packet a Node server does not send).

    An idle browser costs it no task: python-engineio keeps four for each WebSocket, about
    1.5 KiB each with what they hold: one sleeping through the ping interval to send the
    next ping, a writer waiting for packets all the connection long, and the waits of the
    writer and of the reader under ``asyncio.wait_for`` (on Python 3.11 a task each). Here a
    timer sends the ping, the connection's own task reads (without a timeout: a browser that
    stops answering pings is closed when its PONG is due: :meth:`_pong_due`), and a writer
    runs only while something is queued (:meth:`_write_queued`); the behaviour is
    python-engineio's, the heartbeat's timing Node's."""

    last_ping: float | None
    connected: bool
    queue: SocketQueue
    _websocket: WebSocket | None = None  # once upgraded, while open (see _write_queued)
    _writer: asyncio.Future[None] | None = None  # writing what is queued, while something is
    # the heartbeat's one timer: the next PING, or the last one's PONG due; cancelled when it
    # is answered or the socket closes, so that a closed socket is not kept for it
    _heartbeat: asyncio.TimerHandle | None = None

    def schedule_ping(self) -> None:
        if self.closing or self.closed:  # a PONG come while closing: no more pings
            return
        if self.last_ping:  # as python-engineio's: once the previous ping was answered
            self.last_ping = None
            self._timer(self.server.ping_interval, self._ping)

    def _ping(self) -> None:
        if not self.closing and not self.closed:
            self.last_ping = sent = time.time()
            self.queue.put_nowait(eio_packet.Packet(eio_packet.PING))
            self._timer(self.server.ping_timeout, self._pong_due, sent)

    def _timer(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self._heartbeat = asyncio.get_running_loop().call_later(delay, callback, *args)

    def _pong_due(self, sent: float) -> None:
        """The ping sent at ``sent`` is still unanswered a ping timeout later: the browser
        is gone, and closed now, as a Node server closes it (python-engineio finds it at its
        next heartbeat check, up to a ping timeout later, or when a packet is sent to it,
        inside the broadcast sending it)."""
        if self.last_ping == sent and not self.closing and not self.closed:
            self.server.logger.info("%s: Client is gone, closing socket", self.sid)
            _closing.start(self.close(wait=False, reason=self.server.reason.PING_TIMEOUT))

    async def send(self, pkt: Any) -> None:
        """python-engineio's, without its heartbeat check (:meth:`_pong_due` does it)."""
        if self.closed:
            raise engineio.exceptions.SocketIsClosedError()
        await self.queue.put(pkt)

    async def _websocket_handler(self, ws: WebSocket) -> None:
        """python-engineio's, reading in the connection's own task: it reads each message
        in a task of its own under ``asyncio.wait_for``, with a timeout that holds a timer
        for each browser all the time. Ends when the browser closes, stops answering pings
        (:meth:`_pong_due` closes its socket: :meth:`close`), or sends a
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
        while True:  # a browser gone silent is closed when its PONG is due (close)
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
        WebSocket transport ignores that packet, and a browser gone silent is ended with
        this close only)."""
        websocket, closing = self._websocket, self.closing or self.closed
        if websocket is not None:
            websocket.queue = None
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
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


def node_engine(
    eio: Any,
    websocket: type[WebSocket],
    translate_request: Callable[[Any], dict[str, Any]],
) -> None:
    """Make an engine.io server of python-engineio's send the packets a Node server sends
    (:class:`SocketQueue`, :class:`EngineSocket`), serve WebSockets with ``websocket``
    (:func:`~.websocket.websocket_class`) and make each request's environ with
    ``translate_request`` (from its aiohttp request): both in its driver table."""
    eio.create_queue = SocketQueue
    engineio.async_socket.AsyncSocket = EngineSocket  # python-engineio makes each with it
    eio._async = {**eio._async, "websocket": websocket, "translate_request": translate_request}


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
