"""HTTP pass-through: every request on the public address that is not Socket.IO goes to
the backend as it came, and the backend's answer comes back as it gave it, streamed both
ways, so a frontend with one base URL for REST and Socket.IO only changes that URL.

What changes on the way is what RFC 9110 asks of a proxy: hop-by-hop fields are dropped
(section 7.6.1), ``X-Forwarded-For`` / ``-Proto`` / ``-Host`` say where the request came
from, and a ``Location`` that names the backend names the public address instead. The
browser's credentials travel as they came; enricher adds none of its own.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import unquote, urlsplit

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .access import Credentials, Gate, Refused

log = structlog.get_logger("enricher.http")

# RFC 9110 7.6.1: meant for one connection, never forwarded; and the ones it names in
# Connection. Proxy-Authenticate/-Authorization are addressed to a proxy (11.7): this one.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# Set by enricher for the backend (Host: the backend's own), or answered here (Expect).
_REQUEST_OWN = frozenset({"host", "expect", "x-forwarded-for", "x-forwarded-proto"})
_FORWARDED = ("x-forwarded-host", "forwarded")
# Headers aiohttp would add to a request on its own: the backend gets the browser's only.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_CHUNK = 64 * 1024
# The files a Node Socket.IO server serves under its path (its serveClient option).
_CLIENT_SCRIPT = re.compile(r"/socket\.io(\.msgpack|\.esm)?(\.min)?\.js(\.map)?")
VIA = "1.1 enricher"


class Observer(Protocol):
    """Where the pass-through reports what it relayed (the metrics)."""

    def http_answered(self, method: str, status: int, seconds: float | None) -> None: ...
    def http_body(self, direction: str, size: int) -> None: ...
    def http_upstream_error(self, reason: str) -> None: ...


@dataclass(frozen=True)
class Rules:
    """What is relayed, and whose forwarding headers are believed."""

    target: URL  # the backend's base URL: scheme, host, port and an optional path prefix
    paths: tuple[str, ...] = ("/",)  # path prefixes relayed; others are answered 404
    # Socket.IO paths (enricher's, the backend's): not relayed, but for the client script
    excluded: tuple[str, ...] = ("/socket.io",)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def relayed(self, path: str) -> bool:
        def under(prefix: str) -> bool:
            prefix = prefix.rstrip("/")
            return path == prefix or path.startswith(prefix + "/")

        for prefix in self.excluded:
            if under(prefix):
                # The backend's Socket.IO server serves its client script there
                # (<script src="/socket.io/socket.io.js">); anything else would reach the
                # backend's own Socket.IO endpoint, around enricher.
                rest = path[len(prefix.rstrip("/")) :]
                return bool(_CLIENT_SCRIPT.fullmatch(rest)) and any(under(p) for p in self.paths)
        return any(under(p) for p in self.paths)

    def trusts(self, peer: str | None) -> bool:
        if peer is None:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:  # a unix socket's peer
            return False
        return any(address in network for network in self.trusted_proxies)


def request_headers(
    headers: CIMultiDictProxy[str], peer: str | None, scheme: str, host: str, trusted: bool
) -> CIMultiDict[str]:
    """The browser's headers as the backend gets them: hop-by-hop ones dropped, the
    forwarding ones added (kept and extended when ``trusted`` says a proxy in front set them)."""
    dropped = HOP_BY_HOP | _connection_named(headers) | _REQUEST_OWN
    if not trusted:
        dropped |= set(_FORWARDED)
    relayed = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in dropped)
    chain = [v for v in headers.getall("X-Forwarded-For", []) if trusted]
    if peer:
        chain.append(peer)
    if chain:
        relayed["X-Forwarded-For"] = ", ".join(chain)
    relayed["X-Forwarded-Proto"] = (trusted and headers.get("X-Forwarded-Proto")) or scheme
    if "X-Forwarded-Host" not in relayed:
        relayed["X-Forwarded-Host"] = host
    _via(relayed)
    return relayed


def answer_headers(
    raw: Iterable[tuple[bytes, bytes]], target: URL, public: URL
) -> CIMultiDict[str]:
    """The backend's answer headers as the browser gets them, names spelled as it spelled
    them: hop-by-hop ones dropped, ``Via`` extended, a ``Location`` naming the backend made
    to name the public address."""
    headers = CIMultiDict(
        (name.decode("latin-1"), value.decode("utf-8", "replace")) for name, value in raw
    )
    dropped = HOP_BY_HOP | _connection_named(headers)
    backend = str(target.origin())
    answer: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() in dropped:
            continue
        if name.lower() == "location" and (value == backend or value.startswith(backend + "/")):
            value = str(public.origin()) + value[len(backend) :]
        answer.add(name, value)
    _via(answer)
    return answer


def _via(headers: CIMultiDict[str]) -> None:
    """RFC 9110 7.6.3: a proxy names itself in ``Via`` of each message it forwards."""
    hops = [*headers.popall("Via", []), VIA]
    headers["Via"] = ", ".join(hops)


class _Relayed(web.StreamResponse):
    """An answer with the backend's headers only: aiohttp adds ``Server`` and a default
    ``Content-Type`` to the answers it writes, which the browser would not have had."""

    def __init__(self, status: int, reason: str | None, headers: CIMultiDict[str]) -> None:
        super().__init__(status=status, reason=reason, headers=headers)
        self._not_sent = {"Server", "Content-Type"} - {name.title() for name in headers}

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        for name in self._not_sent:
            self.headers.popall(name, None)


def _connection_named(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    return {
        token.strip().lower()
        for value in headers.getall("Connection", [])
        for token in value.split(",")
        if token.strip()
    }


def _dot_segments(raw_path: str) -> bool:
    """A path with ``.`` or ``..`` segments, plain or percent-encoded: browsers resolve them
    before sending, and a backend that resolved them after the path check would be asked
    for a path the check never saw."""
    return any(segment in (".", "..") for segment in unquote(raw_path).split("/"))


def _problem(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status)


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
        gate: Gate | None = None,
        cors_origins: Collection[str] | Literal["*"] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._rules = rules
        self._observe = observer
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._gate = gate  # None: the backend checks its requests' credentials itself
        self._cors_origins = cors_origins  # for enricher's own answers, as for Socket.IO
        self._clock = clock
        self.in_flight = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = self._clock()
        self.in_flight += 1
        try:
            response = await self._relay(request, started)
        finally:
            self.in_flight -= 1
        return response

    async def _relay(self, request: web.Request, started: float) -> web.StreamResponse:
        method = request.method
        if _dot_segments(request.raw_path.partition("?")[0]):
            return self._answer_here(request, _problem(400, "bad_path", "dot segments in path"))
        if not self._rules.relayed(request.path):
            return self._answer_here(
                request, _problem(404, "not_relayed", "this path is not relayed to the backend")
            )
        refusal = await self._refusal(request)
        if refusal is not None:
            return self._answer_here(request, refusal)

        trusted = self._rules.trusts(request.remote)
        headers = request_headers(
            request.headers, request.remote, request.scheme, request.host, trusted
        )
        public = URL.build(
            scheme=(trusted and request.headers.get("X-Forwarded-Proto")) or request.scheme,
            authority=(trusted and request.headers.get("X-Forwarded-Host")) or request.host,
        )
        target = self._rules.target
        url = URL(str(target).rstrip("/") + request.raw_path, encoded=True)
        body = self._body(request) if request.body_exists else None
        try:
            async with self._session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                skip_auto_headers=_NO_AUTO_HEADERS,
                timeout=self._timeout,
            ) as answer:
                self._observe.http_answered(method, answer.status, self._clock() - started)
                return await self._stream_back(request, answer, target, public)
        except aiohttp.ServerTimeoutError as exc:  # connect or first byte: before any answer
            log.warning("http_backend_timeout", path=request.path, error=str(exc))
            return self._failed(
                request, started, 504, "timeout", "the backend did not answer in time"
            )
        except aiohttp.ClientConnectorError as exc:
            log.warning("http_backend_unreachable", url=str(target), error=str(exc))
            return self._failed(
                request, started, 502, "unreachable", "the backend is not reachable"
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("http_backend_failed", path=request.path, error=repr(exc))
            return self._failed(request, started, 502, "error", "the backend's answer was broken")

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

    async def _body(self, request: web.Request) -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(_CHUNK):
            self._observe.http_body("in", len(chunk))
            yield chunk

    async def _stream_back(
        self,
        request: web.Request,
        answer: aiohttp.ClientResponse,
        target: URL,
        public: URL,
    ) -> web.StreamResponse:
        headers = answer_headers(answer.raw_headers, target, public)
        response = _Relayed(answer.status, answer.reason, headers)
        await response.prepare(request)
        try:
            async for chunk in answer.content.iter_chunked(_CHUNK):
                await response.write(chunk)
                self._observe.http_body("out", len(chunk))
            await response.write_eof()
        except ConnectionResetError:  # the browser left; the backend connection is closed
            log.debug("http_browser_left", path=request.path)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The status is sent already: the browser must see the answer cut short, as it
            # would have from the backend, never a complete-looking one.
            self._observe.http_upstream_error("broken")
            log.warning("http_answer_broken", path=request.path, error=repr(exc))
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


def target_url(value: str) -> URL:
    """The backend's base URL for HTTP from a Socket.IO or REST URL (ws:// is http://)."""
    parts = urlsplit(value)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return URL(value).with_scheme(scheme).with_query(None).with_fragment(None)
