"""The HTTP servers enricher listens with (the public address, the admin one): what a
client may send before its request is handled at all, and what enricher's answers say of
it. Node's HTTP server is the measure, since the frontends were written against it: request
headers at most 16 KiB in all, and in by 60 s (its ``maxHeaderSize``, ``headersTimeout``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

from .config import split_address
from .internals.http import name_server
from .metrics import Metrics

log = structlog.get_logger("enricher.server")

HEADER_LIMIT = 16 * 1024  # a request's headers in all, as Node's maxHeaderSize
# A connection that has not sent a whole request by then (its first, or the next one on a
# kept-alive connection) is closed: a client trickling its headers would keep it forever.
HEADERS_TIMEOUT = 60.0

# enricher's own answers do not name the software and version serving them, for anyone
# probing for known flaws: aiohttp puts its own in every answer it makes (its answers to a
# request it cannot parse included) unless the answer has a Server header already (a
# relayed one keeps the backend's), and has no setting for it.
name_server("enricher")


def bind(address: str) -> socket.socket:
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


async def start(
    app: web.Application,
    address: str,
    metrics: Metrics,
    headers_timeout: float = HEADERS_TIMEOUT,
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``address``: its runner and port. A request's handler is
    cancelled when its client leaves (a relayed request stops waiting for the backend and
    gives its connection back), but for those :func:`shielded`."""
    app.middlewares.append(_header_limit(metrics))
    # Browsers are closed before the runners are; their handlers end at once (relayed HTTP
    # requests are waited for before). Request bodies stay as sent (a gzip upload is
    # relayed gzipped).
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=1.0,
        auto_decompress=False,
        max_line_size=HEADER_LIMIT,
        max_field_size=HEADER_LIMIT,
        keepalive_timeout=headers_timeout,
        handler_cancellation=True,
        logger=_server_log(metrics),
    )
    await runner.setup()
    sock = bind(address)
    await web.SockSite(runner, sock).start()
    return runner, sock.getsockname()[1]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def shielded(answer: Awaitable[web.StreamResponse]) -> Awaitable[web.StreamResponse]:
    """A request's answer, made to its end when its client leaves (python-engineio sees
    the connection close and cleans up after it itself; cancelled halfway, a session could
    be left behind). Runs in a task of its own."""
    return _shielded(asyncio.ensure_future(answer))


async def _shielded(task: asyncio.Future[web.StreamResponse]) -> web.StreamResponse:
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:  # its client left: how it ends is nobody's to hear
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        raise


def _header_limit(metrics: Metrics) -> Middleware:
    """A request whose headers are more than :data:`HEADER_LIMIT` in all gets 431, as from
    Node (aiohttp bounds each header and their number, not their sum)."""

    async def refuse(request: web.Request, size: int) -> web.StreamResponse:
        log.info("http_bad_request", reason="headers_too_large", size=size, limit=HEADER_LIMIT)
        metrics.http_answered(request.method, 431, None)
        refused = web.json_response(
            {"error": "headers_too_large", "detail": "the request's headers are too large"},
            status=431,
        )
        refused.force_close()
        return refused

    # A plain function handing on the handler's coroutine: nothing of it is kept for the
    # request's life (a WebSocket's is the connection's).
    @web.middleware
    def header_limit(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        size = sum(len(name) + len(value) + 4 for name, value in request.raw_headers)
        if size <= HEADER_LIMIT:
            return handler(request)
        return refuse(request, size)

    return header_limit


class _MalformedRequests(logging.Handler):
    """aiohttp logs a request it cannot parse with a traceback, as an error of its own: it
    is the client's. One line without traceback, counted; anything else stays an error."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            detail = str(error.message).strip().splitlines()
            log.info(
                "http_bad_request",
                reason="malformed",
                status=error.code,
                detail=detail[0][:200] if detail else "",
            )
            self._metrics.http_answered("", error.code or 400, None)
            return
        log.error("http_server_error", message=record.getMessage(), exc_info=record.exc_info)


def _server_log(metrics: Metrics) -> logging.Logger:
    """The logger of one server's request handlers (not in logging's registry: one each)."""
    logger = logging.Logger("aiohttp.server")
    logger.addHandler(_MalformedRequests(metrics))
    logger.propagate = False
    return logger
