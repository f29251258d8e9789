"""The one Socket.IO connection to the backend: connects, reconnects forever, feeds events on.

python-socketio's own reconnection is off: it does not cover the first connection, nor a
backend that disconnects the socket on purpose, so one supervisor loop covers every case
with the same backoff and jitter.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
import socketio
import structlog

from . import jsonwire
from .config import UpstreamSettings
from .internals.client import Client

log = structlog.get_logger("enricher.upstream")


def _backend_client(
    tls: ssl.SSLContext | None, tracing: aiohttp.TraceConfig | None = None
) -> Client:
    """A Socket.IO client for the backend, reconnected by its owner, with the TLS settings."""

    def http_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls if tls is not None else True),
            trace_configs=[tracing] if tracing is not None else None,
        )

    # handle_sigint off: python-socketio would otherwise take Ctrl-C over at the first
    # connection and cancel every task, skipping enricher's own shutdown.
    return Client(
        reconnection=False,
        logger=False,
        engineio_logger=False,
        handle_sigint=False,
        json=jsonwire,
        http_session=http_session,
        # The backend's events are forwarded whatever their size: no WebSocket message
        # limit (aiohttp's default, 4 MiB, would drop the connection, and the event).
        websocket_extra_options={"max_msg_size": 0},
    )


EventSink = Callable[[str, tuple[Any, ...]], None]


class UpstreamUnavailable(Exception):
    """The backend connection is down; the event was not sent."""


def as_socketio_data(args: tuple[Any, ...]) -> Any:
    """python-socketio's ``data`` for a list of event arguments.

    python-socketio sends a tuple as several arguments and ``None`` as none at all, so a
    single ``null`` argument stays a one-element tuple.
    """
    if not args:
        return None
    if len(args) == 1 and not isinstance(args[0], tuple | type(None)):
        return args[0]
    return tuple(args)


def connect_url(url: str, query: dict[str, str]) -> str:
    """``url`` with the configured handshake query parameters added."""
    if not query:
        return url
    parts = urlsplit(url)
    extra = urlencode(query)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: somewhere in the upper half of ``base * 2**attempt``."""
    ceiling = min(cap, base * 2 ** min(attempt, 30))
    return float(ceiling * (0.5 + 0.5 * rng.random()))


class Upstream:
    """Keeps one connection to the backend up and hands every event to ``on_event``.

    ``on_event`` is called synchronously, in the order the backend sent the events.
    ``on_connected`` runs after each successful (re)connection; ``on_undecodable`` gets,
    in order too, the text of a packet too deeply nested to decode.
    """

    def __init__(
        self,
        settings: UpstreamSettings,
        *,
        on_event: EventSink,
        on_connected: Callable[[], Awaitable[None]],
        on_state: Callable[[bool], None],
        on_undecodable: Callable[[str], None] = lambda text: None,
        rng: random.Random | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._settings = settings
        self._on_event = on_event
        self._on_connected = on_connected
        self._on_state = on_state
        self._rng = rng or random.Random()
        self._send_lock = asyncio.Lock()
        self._stopping = False
        self._disconnected = asyncio.Event()
        self._up = False
        self._request_error: BaseException | None = None  # of the attempt under way
        tracing = aiohttp.TraceConfig()
        tracing.on_request_exception.append(self._request_failed)
        self.client = _backend_client(tls, tracing)
        self.client.on_undecodable = on_undecodable
        self.client.on("*", self._any_event)
        self.client.on("disconnect", self._disconnect)

    @property
    def connected(self) -> bool:
        """Up from a completed connection until its disconnect event, as the logs say.
        ``on_state`` is called when it changes."""
        return self._up

    @property
    def last_heard(self) -> datetime:
        """When the last packet (an event, a ping, anything) came from the backend, by
        the wall clock; everything the backend sent before it has been received. Read
        when the connection is lost, it is the last moment it was known to be up."""
        heard = getattr(self.client.eio, "heard_at", None)
        return heard if isinstance(heard, datetime) else datetime.now(UTC)

    async def _request_failed(self, session: Any, context: Any, params: Any) -> None:
        self._request_error = params.exception

    def _failure(self, exc: Exception) -> dict[str, str]:
        """What broke a connection attempt: python-engineio hides the request's own error
        (a TLS failure among them) behind its own."""
        cause: BaseException = self._request_error or exc
        if isinstance(cause, aiohttp.ClientSSLError | ssl.SSLError):
            return {"reason": "tls", "error": str(cause)}
        return {"error": str(cause) or type(cause).__name__}

    async def _any_event(self, event: str, *args: Any) -> None:
        self._on_event(event, args)

    async def _disconnect(self, reason: str | None = None) -> None:
        self._up = False
        log.warning("upstream_disconnected", reason=str(reason))
        self._on_state(False)
        self._disconnected.set()

    async def run(self) -> None:
        """Connect, and reconnect after every loss, until :meth:`stop`."""
        settings = self._settings
        loop = asyncio.get_running_loop()
        attempt = 0
        while not self._stopping:
            log.info("upstream_connecting", url=settings.url, attempt=attempt)
            self._disconnected.clear()
            self._request_error = None
            try:
                # The whole attempt is bounded: engine.io waits for the server's OPEN
                # packet without a timeout of its own.
                await asyncio.wait_for(self._connect(), settings.connect_timeout)
            except Exception as exc:  # any failed attempt is retried, whatever broke
                await self._abandon_attempt()
                delay = self._backoff(attempt)
                attempt += 1
                log.warning(
                    "upstream_connect_failed", **self._failure(exc), retry_in=round(delay, 3)
                )
                await self._pause(delay)
                continue
            connected_at = loop.time()
            self._up = True
            log.info("upstream_connected", url=settings.url, sid=self.client.sid)
            self._on_state(True)
            try:
                await self._on_connected()
            except Exception:
                log.exception("upstream_on_connected_failed")
            await self._disconnected.wait()
            await self.client.eio.wait()
            # A connection that did not last is a failed attempt: a backend that drops
            # the proxy at once is not hammered.
            if loop.time() - connected_at >= settings.reconnect_delay_max:
                attempt = 0
            delay = self._backoff(attempt)
            attempt += 1
            await self._pause(delay)

    async def _connect(self) -> None:
        settings = self._settings
        await self.client.connect(
            connect_url(settings.url, settings.query),
            headers=settings.headers,
            auth=settings.auth,
            transports=settings.transports,
            namespaces=["/"],
            socketio_path=settings.socketio_path,
            wait_timeout=settings.connect_timeout,
        )

    async def _abandon_attempt(self) -> None:
        """Leave no half-open engine.io connection behind a failed attempt."""
        eio = self.client.eio
        try:
            ws = getattr(eio, "ws", None)
            if ws is not None and not ws.closed:
                await ws.close()
            await eio.disconnect(abort=True)
        except Exception:
            log.debug("upstream_cleanup_failed", exc_info=True)
        self.client.connected = False

    def _backoff(self, attempt: int) -> float:
        settings = self._settings
        return backoff_delay(
            attempt, settings.reconnect_delay, settings.reconnect_delay_max, self._rng
        )

    async def _pause(self, seconds: float) -> None:
        if not self._stopping:
            await asyncio.sleep(seconds)

    async def stop(self) -> None:
        """Disconnect and stop reconnecting."""
        self._stopping = True
        if self.client.connected:
            await self.client.disconnect()
        else:  # stopped in the middle of a connection attempt: leave nothing half open
            await self._abandon_attempt()

    async def emit(self, event: str, args: tuple[Any, ...]) -> None:
        """Send an event to the backend; raises :class:`UpstreamUnavailable` when down."""
        if not self._up:
            raise UpstreamUnavailable(event)
        async with self._send_lock:
            await self.client.emit(event, as_socketio_data(args))

    async def call(self, event: str, args: tuple[Any, ...], timeout: float) -> Any:
        """Send an event and wait for the backend's ack; its arguments come back as
        python-socketio gives them (one value, a tuple of several, or None).

        Raises :class:`UpstreamUnavailable` when down and ``TimeoutError`` when no ack came.
        """
        if not self._up:
            raise UpstreamUnavailable(event)
        ack = _Ack(self.client)
        async with self._send_lock:
            await ack.send(event, args)
        return await ack.wait(timeout)


class _Ack:
    """The backend's ack of one event: :meth:`send` the event, then :meth:`wait`."""

    def __init__(self, client: socketio.AsyncClient) -> None:
        self._client = client
        answer: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()

        def acked(*ack_args: Any) -> None:
            if not answer.done():
                answer.set_result(ack_args)

        self._answer, self._acked = answer, acked

    async def send(self, event: str, args: tuple[Any, ...]) -> None:
        await self._client.emit(event, as_socketio_data(args), callback=self._acked)

    async def wait(self, timeout: float) -> Any:
        """The ack's arguments as python-socketio gives them (one value, a tuple of
        several, or None); ``TimeoutError`` when none came within ``timeout``."""
        try:
            return as_socketio_data(await asyncio.wait_for(self._answer, timeout))
        except TimeoutError:
            # python-socketio keeps the callback until the ack comes, which may be never
            callbacks = self._client.callbacks.get("/", {})
            for ack_id in [i for i, known in callbacks.items() if known is self._acked]:
                del callbacks[ack_id]
            raise
