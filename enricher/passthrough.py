"""HTTP pass-through: every request on the public address that is not Socket.IO goes to
the backend as it came, and the backend's answer comes back as it gave it, streamed both
ways, so a frontend with one base URL for REST and Socket.IO only changes that URL.

What changes on the way is what RFC 9110 asks of a proxy (enricher/proxy_rules.py holds
those rules). The browser's credentials travel as they came; enricher adds none of its own.
This module is the I/O: the request relayed, the answer streamed back, the upload's pace,
enricher's own answers when the backend gives none.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import sys
import termios
import time
import weakref
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Literal, Protocol

import aiohttp
import structlog
from aiohttp import web
from yarl import URL

from .access import Credentials, Gate, Refused
from .clients import client_address
from .internals.http import Relayed
from .proxy_rules import Rules, addressed, answer_headers, request_headers

log = structlog.get_logger("enricher.http")

# Headers aiohttp would add to a request on its own: the backend gets the browser's only.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_CHUNK = 64 * 1024
UNSENT_POLL = 0.01  # seconds between looks at what the kernel still holds, at shutdown


class Observer(Protocol):
    """Where the pass-through reports what it relayed (the metrics)."""

    def http_answered(self, method: str, status: int, seconds: float | None) -> None: ...
    def http_body(self, direction: str, size: int) -> None: ...
    def http_upstream_error(self, reason: str) -> None: ...


def _problem(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status)


@dataclass(frozen=True)
class UploadPace:
    """How slowly a request body may come: on average at least ``min_rate`` bytes a
    second once ``grace`` seconds have passed (0: any pace). A client sending a byte every
    few seconds would otherwise hold a backend connection for as long as it likes."""

    min_rate: float = 1024.0
    grace: float = 10.0

    def deadline(self, started: float, received: int) -> float | None:
        """When the next byte must have come by (None: never)."""
        if self.min_rate <= 0:
            return None
        return started + max(self.grace, (received + 1) / self.min_rate)


class UploadTooSlow(Exception):
    """A request body came slower than :class:`UploadPace` allows."""


class Passthrough:
    """The aiohttp handler that relays one request and streams its answer back."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        rules: Rules,
        observer: Observer,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_per_client: int = 64,
        upload: UploadPace | None = None,
        gate: Gate | None = None,
        cors_origins: Collection[str] | Literal["*"] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._rules = rules
        self._base = str(rules.target).rstrip("/")  # a request's raw path is appended
        self._observe = observer
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._gate = gate  # None: the backend checks its requests' credentials itself
        self._cors_origins = cors_origins  # for enricher's own answers, as for Socket.IO
        self._clock = clock
        self._max_per_client = max_per_client
        self._upload = upload or UploadPace()
        self._per_client: dict[str, int] = {}  # relayed requests under way, by client
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # The connections relayed answers went out on (while they are open).
        self._answered: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = self._clock()
        client = client_address(request, self._rules.trusts)
        if self._per_client.get(client, 0) >= self._max_per_client:
            log.warning("http_client_limited", client=client, limit=self._max_per_client)
            refused = _problem(429, "too_many_requests", "too many requests under way at once")
            refused.headers["Retry-After"] = "1"
            return self._answer_here(request, refused, started)
        self._per_client[client] = self._per_client.get(client, 0) + 1
        self.in_flight += 1
        self._idle.clear()
        if request.transport is not None:
            self._answered.add(request.transport)
        try:
            return await self._relay(request, started)
        except asyncio.CancelledError:  # it left: the backend request is closed with it
            self._browser_left(request, started, "wait")
            raise
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()
            left = self._per_client.pop(client) - 1
            if left:
                self._per_client[client] = left

    @property
    def clients(self) -> int:
        """Clients with a relayed request under way."""
        return len(self._per_client)

    async def idle(self) -> None:
        """Return once no relayed request is under way and what was written of their answers
        has left this host (at shutdown: let them finish; closing a connection whose data
        still waits in the kernel for a slow reader could cut its end)."""
        await self._idle.wait()
        while any(_unsent(transport) for transport in list(self._answered)):
            await asyncio.sleep(UNSENT_POLL)
            await self._idle.wait()

    async def _relay(self, request: web.Request, started: float) -> web.StreamResponse:
        method = request.method
        refusal = self._rules.refusal(method, request.raw_path)
        if refusal == "bad_path":
            log.info("http_bad_request", reason="bad_path", path=request.raw_path[:200])
            return self._answer_here(request, _problem(400, refusal, "not a path to relay"))
        if refusal is not None:
            return self._answer_here(
                request, _problem(404, refusal, "this path is not relayed to the backend")
            )
        refused = await self._refusal(request)
        if refused is not None:
            return self._answer_here(request, refused)

        trusted = self._rules.trusts(request.remote)
        scheme, host = addressed(request.headers, request.scheme, request.host, trusted)
        try:
            public = URL.build(scheme=scheme, authority=host)
        except ValueError:  # a Host header that names no host
            log.info("http_bad_request", reason="bad_host", host=host[:200])
            return self._answer_here(request, _problem(400, "bad_host", "not a host name"))
        headers = request_headers(
            request.headers, request.remote, request.scheme, request.host, trusted
        )
        target = self._rules.target
        url = URL(self._base + request.raw_path, encoded=True)
        upload = _Upload(request, self._observe, self._upload) if request.body_exists else None
        try:
            async with self._session.request(
                method,
                url,
                headers=headers,
                data=upload.chunks() if upload else None,
                allow_redirects=False,
                skip_auto_headers=_NO_AUTO_HEADERS,
                timeout=self._timeout,
            ) as answer:
                return await self._stream_back(request, answer, target, public, started)
        except Exception as exc:
            if upload is not None and upload.too_slow:
                log.warning("http_upload_too_slow", path=request.path, received=upload.received)
                detail = "the request body came too slowly"
                slow = _problem(408, "upload_too_slow", detail)
                slow.force_close()  # the rest of its body is not read
                return self._answer_here(request, slow, started)
            if upload is not None and upload.browser_left:
                return self._browser_left(request, started, "upload")
            if isinstance(exc, aiohttp.ServerTimeoutError):  # connect, or the first byte
                log.warning("http_backend_timeout", path=request.path, error=_text(exc))
                detail = "the backend did not answer in time"
                return self._failed(request, started, 504, "timeout", detail)
            if isinstance(exc, aiohttp.ClientConnectorError):
                log.warning("http_backend_unreachable", url=str(target), error=_text(exc))
                detail = "the backend is not reachable"
                return self._failed(request, started, 502, "unreachable", detail)
            if isinstance(exc, aiohttp.ClientError | TimeoutError):
                log.warning("http_backend_failed", path=request.path, error=_text(exc))
                detail = "the backend's answer was broken"
                return self._failed(request, started, 502, "error", detail)
            raise

    async def _refusal(self, request: web.Request) -> web.Response | None:
        """Edge authentication (``http.auth: edge``): the same gate as the browsers' sockets.
        A CORS preflight carries no credentials by the Fetch standard; it is relayed."""
        if self._gate is None or (
            request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        ):
            return None
        try:
            await self._gate.admit(Credentials.from_http(request.headers, request.query_string))
        except Refused as refused:
            log.info("http_refused", reason=refused.reason, path=request.path)
            return web.json_response(
                {"error": "unauthorized", "reason": refused.reason}, status=401
            )
        return None

    async def _stream_back(
        self,
        request: web.Request,
        answer: aiohttp.ClientResponse,
        target: URL,
        public: URL,
        started: float,
    ) -> web.StreamResponse:
        seconds = self._clock() - started
        headers = answer_headers(answer.raw_headers, target, public)
        length = answer.content_length
        # A small answer of known length is read whole and goes out in one write, headers
        # and body together (a system call fewer per request; and if it breaks on the way,
        # the browser gets a 502 instead of a cut answer). Any other is streamed.
        small = length is not None and length <= _CHUNK and request.method != "HEAD"
        body = await answer.read() if small else None
        response = Relayed(answer.status, answer.reason, headers, send_headers_at_once=not small)
        try:
            await response.prepare(request)
            if body:
                await response.write(body)
        except ConnectionResetError:  # gone before the answer began
            return self._browser_left(request, started, "wait")
        self._observe.http_answered(request.method, answer.status, seconds)
        if body is not None:
            self._observe.http_body("out", len(body))
            with contextlib.suppress(ConnectionResetError):
                await _write_eof(request, response)
            return response
        try:
            async for chunk in answer.content.iter_chunked(_CHUNK):
                await response.write(chunk)
                self._observe.http_body("out", len(chunk))
            await _write_eof(request, response)
        except ConnectionResetError:  # the browser left; the backend connection is closed
            log.debug("http_browser_left", path=request.path, during="download")
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The status is sent already: the browser must see the answer cut short, as it
            # would have from the backend, never a complete-looking one.
            self._observe.http_upstream_error("broken")
            log.warning("http_answer_broken", path=request.path, error=_text(exc))
            if request.transport is not None:
                request.transport.abort()
        return response

    def _answer_here(
        self, request: web.Request, response: web.Response, started: float | None = None
    ) -> web.Response:
        """An answer of enricher's own; a page on an allowed origin may read it (else the
        frontend would see a network failure instead of a 401 or a 502)."""
        seconds = None if started is None else self._clock() - started
        self._observe.http_answered(request.method, response.status, seconds)
        origin = request.headers.get("Origin")
        if origin and (self._cors_origins == "*" or origin in self._cors_origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Vary"] = "Origin"
        return response

    def _failed(
        self, request: web.Request, started: float, status: int, reason: str, detail: str
    ) -> web.Response:
        self._observe.http_upstream_error(reason)
        return self._answer_here(request, _problem(status, f"backend_{reason}", detail), started)

    def _browser_left(self, request: web.Request, started: float, during: str) -> web.Response:
        """Counted as nginx does (499): the browser went away, the backend did nothing wrong."""
        log.debug("http_browser_left", path=request.path, during=during)
        return self._answer_here(request, web.Response(status=499), started)


class _Upload:
    """A browser's request body, read as the backend takes it; whether the browser left
    in the middle (then the failed request is not the backend's fault)."""

    def __init__(self, request: web.Request, observer: Observer, pace: UploadPace) -> None:
        self._request = request
        self._observe = observer
        self._pace = pace
        self.browser_left = False
        self.too_slow = False
        self.received = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._request.content
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            while True:
                async with asyncio.timeout_at(self._pace.deadline(started, self.received)):
                    chunk = await content.readany()
                if not chunk:
                    return
                self.received += len(chunk)
                self._observe.http_body("in", len(chunk))
                yield chunk
        except TimeoutError:
            self.too_slow = True
            raise UploadTooSlow from None
        except (ConnectionError, aiohttp.ClientPayloadError, web.HTTPException):
            self.browser_left = True
            raise


async def _write_eof(request: web.Request, response: web.StreamResponse) -> None:
    """End the answer, and return once all of it is with the kernel: aiohttp's write_eof
    returns with up to a buffer's worth still in the transport, which a shutdown that
    follows would lose (the request counts as under way until then)."""
    transport = request.transport
    if transport is None:
        await response.write_eof()
        return
    transport.set_write_buffer_limits(high=0)  # its drain now waits for an empty buffer
    try:
        await response.write_eof()
    finally:
        transport.set_write_buffer_limits()


def _unsent(transport: asyncio.BaseTransport) -> bool:
    """Whether bytes written to this connection still wait in the kernel (not yet sent, or
    not yet acknowledged by the browser)."""
    sock = transport.get_extra_info("socket")
    if sock is None or transport.is_closing():
        return False
    try:
        waiting = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):  # closed meanwhile, or not a TCP socket
        return False
    return int.from_bytes(waiting, sys.byteorder) > 0


def _text(exc: BaseException) -> str:
    """An error for a log line: its type and message. Never its repr, which for a client
    error holds the request's headers, the browser's credentials among them."""
    return f"{type(exc).__name__}: {exc}"
