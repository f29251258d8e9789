"""What a browser's request passes before python-engineio, in both modes: the page's origin,
the environ python-engineio is given, the payload limits, the bad requests a Node server
answers 400, and the connection limit (:func:`engine_gate`)."""

from __future__ import annotations

import base64
import ipaddress
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from .clients import ConnectionLimit
from .internals.websocket import websocket_upgrade
from .metrics import Metrics
from .proxy_rules import addressed
from .refusals import PacedLines, Refusals
from .server import Handler, shielded

log = structlog.get_logger("enricher.downstream")


OWN_ORIGIN = "enricher.own_origin"  # in a request's environ: see engine_translation
_REFUSED = "enricher.origin_refused"


def origins_check(
    listed: list[str] | str, metrics: Metrics, clock: Callable[[], float] = time.monotonic
) -> Callable[[str | None, dict[str, Any]], bool]:
    """The page origins allowed to connect: those ``listed``, and enricher's own where it
    is known for sure (``OWN_ORIGIN``). A request without an Origin is no page's. A page
    refused gets python-engineio's 400 "<origin> is not an accepted origin."; each is
    counted here, and logged at a pace (:class:`PacedLines`)."""
    allowed = frozenset([listed] if isinstance(listed, str) else listed)
    lines = PacedLines(clock)

    def check(origin: str | None, environ: dict[str, Any]) -> bool:
        if origin is None or origin in allowed or origin == environ.get(OWN_ORIGIN):
            return True
        if _REFUSED in environ:
            return False  # asked again for the same request: to write its CORS headers
        environ[_REFUSED] = True
        metrics.browser_admissions.labels("origin").inc()
        fields = lines.due("origin")
        if fields is not None:
            log.warning(
                "browser_refused",
                reason="origin",
                origin=origin[:200],
                host=environ.get("HTTP_HOST", "")[:200],
                remote=environ.get("REMOTE_ADDR"),
                **fields,
            )
        return False

    return check


def engine_translation(
    trusts: Callable[[str | None], bool],
) -> Callable[[web.Request], dict[str, Any]]:
    """python-engineio's request translation, mended: a polling body is read whole
    (WholeBody); the peer is the real one (it says 127.0.0.1 for every one); the scheme is
    the connection's, or a trusted proxy's ``X-Forwarded-Proto`` (it believed anyone's);
    and ``OWN_ORIGIN`` is the origin the browser addressed, where a page there is enricher's
    own: as a trusted proxy in front says (it routes by host), or as the Host header says
    when that is an address or ``localhost``. A Host that is a name is not believed: under
    DNS rebinding, a page of any site could have its name point at enricher.

    The environ is kept for the connection's life: it has what python-engineio and
    python-socketio read, and every header as ``HTTP_<NAME>`` (a browser's connect
    handlers see them), not python-engineio's dozen WSGI constants."""

    def translate_request(request: web.Request) -> dict[str, Any]:
        headers = request.headers
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "PATH_INFO": request.path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": request.query_string,
            "REMOTE_ADDR": request.remote or "",
            "wsgi.input": WholeBody(request),
            "aiohttp.request": request,
        }
        for name, value in headers.items():  # as python-engineio names them
            name = name.upper()
            if name in _CONTENT_HEADERS:
                environ[_CONTENT_HEADERS[name]] = value
                continue
            key = "HTTP_" + name.replace("-", "_")
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        vouched = trusts(request.remote)
        scheme, host = addressed(headers, request.scheme, headers.get("Host", ""), vouched)
        environ["wsgi.url_scheme"] = scheme
        if host and (vouched or _no_name(host)):
            environ[OWN_ORIGIN] = f"{scheme}://{host}"
        return environ

    return translate_request


_CONTENT_HEADERS = {"CONTENT-TYPE": "CONTENT_TYPE", "CONTENT-LENGTH": "CONTENT_LENGTH"}


def _no_name(host: str) -> bool:
    """Whether a Host header (with or without its port) is an IP address or localhost:
    nothing another site's page could be served from."""
    try:
        name = urllib.parse.urlsplit("//" + host).hostname or ""
    except ValueError:  # "[::1" and the like
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name == "localhost" or name.endswith(".localhost")
    return True


class WholeBody:
    """A polling request's body as python-engineio reads it: ``read(n)`` gives all of it.
    aiohttp's stream gives what has arrived so far, and python-engineio took that for the
    whole body: the rest of a large event was lost, silently. (engine_requests has read it
    already, to check it; aiohttp keeps it.)"""

    def __init__(self, request: web.Request) -> None:
        self._request = request

    async def read(self, n: int = -1) -> bytes:
        try:
            return await self._request.read()
        except (ConnectionError, aiohttp.ClientPayloadError, web.HTTPException):  # it left
            return b""


class PayloadLimit:
    """Browser messages over ``max_payload_bytes``: python-engineio closes the connection
    (socket.io-client reconnects) and says nothing; this logs and counts each."""

    def __init__(
        self,
        limit: int,
        metrics: Metrics,
        refusals: Refusals,
        sid_of: Callable[[str], str],
        connected: Callable[[str], bool],
    ) -> None:
        self._limit = limit
        self._metrics = metrics
        self._refusals = refusals
        self._sid_of = sid_of
        self._connected = connected

    def _too_large(self, eio_sid: str, size: int | None, transport: str) -> None:
        log.warning(
            "payload_rejected",
            source="browser",
            reason="too_large",
            size=size,
            limit=self._limit,
            transport=transport,
            sid=self._sid_of(eio_sid),
        )
        self._metrics.client_events.labels("other", "too_large").inc()

    def not_engineio(self, eio_sid: str) -> None:
        """A WebSocket text frame that is no engine.io packet: its connection was closed."""
        self._refusals.refuse(eio_sid, "other", "not_engineio", self._sid_of(eio_sid), True)

    def websocket(self, eio_sid: str, detail: str) -> None:
        size = re.search(r"size (\d+)", detail)  # aiohttp: "Message size N exceeds limit M"
        self._too_large(eio_sid, int(size.group(1)) if size else None, "websocket")

    def polling(self, request: web.Request) -> None:
        """Log and count a polling POST over the limit (python-engineio refuses it)."""
        size = request.content_length
        sid = request.query.get("sid", "")
        if (
            request.method == "POST"
            and size is not None
            and size > self._limit
            and self._connected(sid)  # a browser's, not any request's: no log flood
        ):
            self._too_large(sid, size, "polling")


# The first character of each packet of a polling body: an engine.io packet type, or "b"
# for a binary one in base64.
_POLLING_PACKET = re.compile(r"[0-6b]")


def polling_payload_ok(body: bytes) -> bool:
    """Whether a polling POST body is an engine.io payload: UTF-8, packets separated by
    \\x1e, each one starting with its type."""
    try:
        packets = body.decode("utf-8").split("\x1e")
        for packet in packets:
            if packet[:1] == "b":
                base64.b64decode(packet[1:], validate=True)
    except ValueError:  # not UTF-8, not base64
        return False
    return all(_POLLING_PACKET.match(packet) for packet in packets)


# A request's handler with the next one to call: what engine_requests is.
EngineHandler = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def engine_requests(max_bytes: int, metrics: Metrics) -> EngineHandler:
    """Engine.io requests a Node server answers 400 "Bad request", answered so here too,
    logged in one line and counted: a polling body that is no engine.io payload (python-
    engineio would log a traceback and answer 200), and the errors of a client's making
    python-engineio lets out of its handler (a poll for a session closing meanwhile:
    KeyError; a packet it cannot decode: ValueError), which aiohttp answers 500."""

    def bad_request(request: web.Request, error: str) -> web.Response:
        log.info("http_bad_request", reason="engineio", error=error[:200])
        metrics.http_answered(request.method, 400, None)
        return web.json_response({"code": 3, "message": "Bad request"}, status=400)

    async def engine_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        size = request.content_length
        if request.method == "POST" and size is not None and 0 < size <= max_bytes:
            try:
                body = await request.read()  # kept: python-engineio reads it again (WholeBody)
            except (ConnectionError, aiohttp.ClientPayloadError, web.HTTPException):
                return bad_request(request, "the body was cut short")
            if not polling_payload_ok(body):
                return bad_request(request, "not an engine.io payload")
        try:
            return await handler(request)
        except (KeyError, ValueError) as exc:
            return bad_request(request, f"{type(exc).__name__}: {exc}")

    return engine_requests


def _websocket_upgrade(request: web.Request) -> bool:
    """Whether a request is a WebSocket handshake (a GET asking to upgrade), not merely one
    with an Upgrade header: only those skip the shield and the polling checks."""
    headers = request.headers
    return request.method == "GET" and websocket_upgrade(
        headers.get("Connection"), headers.get("Upgrade")
    )


def engine_gate(
    socketio_path: str,
    clients: ConnectionLimit,
    limit: PayloadLimit,
    max_bytes: int,
    metrics: Metrics,
    *,
    shield_websockets: bool = False,
) -> Middleware:
    """What a request to the Socket.IO path passes before python-engineio, in both modes:
    the connection limit, the polling payload limit's log line, the bad requests a Node
    server answers 400; and not cancelled when its client leaves (python-engineio ends it
    itself, and the connection limit sees that end).

    A WebSocket keeps none of this for its connection's life: no frame (this is a plain
    function handing on python-engineio's coroutine), and no shield task unless
    ``shield_websockets``: its handler ends by itself when the browser leaves
    (:class:`EngineSocket`), and nothing before it waits on anything but the browser.
    Transparent mode's handshake waits for the browser's own backend connection, which a
    cancellation would leave half open: its WebSockets are shielded."""
    prefix = "/" + socketio_path.strip("/") + "/"
    requests = engine_requests(max_bytes, metrics)

    @web.middleware
    def engine_gate(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        if not request.path.startswith(prefix):
            return handler(request)
        if not shield_websockets and _websocket_upgrade(request):
            return clients.admit(request, handler)
        limit.polling(request)
        return shielded(clients.admit(request, lambda request: requests(request, handler)))

    return engine_gate


@dataclass(frozen=True)
class EngineSettings:
    """The browsers' engine.io server, the same in both modes."""

    cors_origins: list[str] | str  # the page origins allowed ("*": any)
    socketio_path: str = "socket.io"
    compression: bool = False  # permessage-deflate
    max_payload_bytes: int = 1_000_000
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_connections_per_client: int = 0  # 0: no limit

    def options(self, metrics: Metrics) -> dict[str, Any]:
        """python-engineio's server options."""
        return {
            "async_mode": "aiohttp",
            "cors_allowed_origins": "*"
            if self.cors_origins == "*"
            else origins_check(self.cors_origins, metrics),
            "max_http_buffer_size": self.max_payload_bytes,
            "ping_interval": self.ping_interval,
            "ping_timeout": self.ping_timeout,
            "logger": False,
        }

    def application(
        self,
        clients: ConnectionLimit,
        limit: PayloadLimit,
        metrics: Metrics,
        *,
        shield_websockets: bool = False,
    ) -> web.Application:
        """The aiohttp app the engine.io server is attached to, behind :func:`engine_gate`."""
        gate = engine_gate(
            self.socketio_path,
            clients,
            limit,
            self.max_payload_bytes,
            metrics,
            shield_websockets=shield_websockets,
        )
        return web.Application(
            middlewares=[gate], client_max_size=max(self.max_payload_bytes, 1024**2)
        )
