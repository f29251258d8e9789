"""The composition root: builds the pieces, wires them together, runs them. Nothing else.
What both modes share is built here; each mode's own parts are assembled by its module
(enricher/shared_mode.py, enricher/transparent_mode.py), called from :func:`running`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import signal
import ssl
from collections.abc import AsyncIterator

import aiohttp
import structlog

from . import __version__, transparent_mode
from .access import Gate, RoomAccess, make_gate
from .admin_view import UNWATCHED, AdminView, BrowserWatch
from .admission import EngineSettings
from .backend import CircuitBreaker, RoomFetcher
from .config import Settings
from .metrics import Metrics
from .passthrough import Passthrough, UploadPace
from .proxy_rules import Rules, target_url
from .shared_mode import Running, SharedMode
from .tls import client_context
from .transparent_mode import RunningTransparent

log = structlog.get_logger("enricher")

ACCESS_CHECKS_AT_ONCE = 64  # connections to the backend for browsers' credentials checks
ANSWER_HEADER_LIMIT = 64 * 1024  # one header of the backend's answers (a big Set-Cookie)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running | RunningTransparent]:
    """Start the proxy; on exit, send every held room and stop cleanly."""
    metrics = Metrics()
    recovery = settings.recovery
    metrics.describe(
        __version__, settings.upstream.mode, recovery.store if recovery.enabled else "none"
    )
    tls = client_context(settings.upstream.tls_verify, settings.upstream.tls_ca_file)
    # No cookie jar: a cookie the backend sets in one answer must never travel with
    # another request (another browser's credentials check above all).
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls), cookie_jar=aiohttp.DummyCookieJar()
        ) as session,
        # Browsers' credentials checks have their own connections: a flood of them does
        # not slow GET /rooms/<id> down.
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=ACCESS_CHECKS_AT_ONCE),
            cookie_jar=aiohttp.DummyCookieJar(),
        ) as access_session,
        # Browsers' own requests to the backend (http pass-through): their answers pass
        # as they came (compressed ones too), and nothing of one browser's is kept.
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=settings.http.max_connections),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            max_line_size=ANSWER_HEADER_LIMIT,
            max_field_size=ANSWER_HEADER_LIMIT,
        ) as http_session,
    ):
        fetcher = RoomFetcher(
            session,
            settings.rest_url,
            timeout=settings.rest.timeout,
            max_in_flight=settings.rest.max_in_flight,
            headers=settings.rest.headers,
            observe=metrics.rest_request,
            breaker=CircuitBreaker(settings.rest.breaker_failures, settings.rest.breaker_cooldown),
        )
        metrics.rest_in_flight.set_function(lambda: fetcher.in_flight)
        metrics.rest_circuit_open.set_function(lambda: fetcher.breaker.is_open)
        gate = make_gate(settings.auth, access_session)
        rules = _rules(settings)
        passthrough = _passthrough(settings, http_session, gate, metrics, rules)
        engine = _engine(settings)
        admin_ui = settings.admin_ui
        view: BrowserWatch = (
            AdminView(
                admin_ui.username,
                admin_ui.password.get_secret_value(),
                admin_ui.origins,
                metrics.admin_ui_logins,
            )
            if admin_ui.enabled
            else UNWATCHED
        )
        async with _viewing(view):
            if settings.upstream.mode == "transparent":
                async with transparent_mode.started(
                    settings, metrics, fetcher, gate, passthrough, tls,
                    engine=engine, rules=rules, view=view,
                ) as started_transparent:  # fmt: skip
                    yield started_transparent
                return
            async with _shared(settings, metrics, fetcher, gate, access_session, tls,
                               passthrough, engine=engine, rules=rules, view=view) as started:  # fmt: skip
                yield started


@contextlib.asynccontextmanager
async def _viewing(view: BrowserWatch) -> AsyncIterator[None]:
    """The Admin UI's view runs as long as the proxy (when it is on)."""
    task = asyncio.create_task(view.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def _shared(
    settings: Settings,
    metrics: Metrics,
    fetcher: RoomFetcher,
    gate: Gate,
    access_session: aiohttp.ClientSession,
    tls: ssl.SSLContext | None,
    passthrough: Passthrough,
    *,
    engine: EngineSettings,
    rules: Rules,
    view: BrowserWatch,
) -> AsyncIterator[Running]:
    """Shared mode, with what only it uses: the room checks of ``room:join``."""
    room_access = (
        RoomAccess(access_session, fetcher.room_url, settings.auth.timeout, settings.auth.cache_ttl)
        if settings.auth.room_check
        else None
    )
    proxy = SharedMode(
        settings, metrics, fetcher, gate, room_access, tls, engine=engine, rules=rules, view=view
    )
    async with proxy.started(passthrough) as started:
        yield started


def _engine(settings: Settings) -> EngineSettings:
    return EngineSettings(
        socketio_path=settings.socketio_path,
        cors_origins=settings.cors_origins,
        compression=settings.websocket.compression,
        max_payload_bytes=settings.max_payload_bytes,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        max_connections_per_client=settings.max_connections_per_client,
    )


def _rules(settings: Settings) -> Rules:
    http = settings.http
    return Rules(
        target=target_url(settings.http_url),
        paths=tuple(http.paths),
        excluded=tuple(
            sorted(
                {
                    "/" + p.strip("/")
                    for p in (settings.socketio_path, settings.upstream.socketio_path)
                }
            )
        ),
        trusted_proxies=tuple(ipaddress.ip_network(n, strict=False) for n in http.trusted_proxies),
    )


def _passthrough(
    settings: Settings,
    session: aiohttp.ClientSession,
    gate: Gate,
    metrics: Metrics,
    rules: Rules,
) -> Passthrough:
    http = settings.http
    return Passthrough(
        session,
        rules,
        metrics,
        connect_timeout=http.connect_timeout,
        read_timeout=http.read_timeout,
        max_per_client=http.max_requests_per_client,
        upload=UploadPace(http.min_upload_rate, http.upload_grace),
        gate=gate if http.auth == "edge" else None,
        cors_origins=settings.cors_origins,
    )


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running(settings):
        # What start-up built stays for the process's life: left out of the collector's
        # full passes, which under load took 30-50 ms each to find nothing (docs/performance.md).
        gc.freeze()
        await stop.wait()
        log.info("stopping", shutdown_grace=settings.shutdown_grace)
