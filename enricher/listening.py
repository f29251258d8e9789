"""Listening and stopping, the same in both modes: the public address (Socket.IO, and every
other request relayed when ``http`` is on) and the admin one (health, metrics), started and
announced in the log; at shutdown, the relayed requests under way given the grace to end.
Each mode's assembly (enricher/shared_mode.py, enricher/transparent_mode.py) calls these.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from . import server
from .admin_view import BrowserWatch
from .config import Settings, split_address
from .metrics import Metrics
from .ops import admin_app
from .passthrough import Passthrough

log = structlog.get_logger("enricher")


async def listen(
    settings: Settings,
    app: web.Application,
    passthrough: Passthrough,
    metrics: Metrics,
    checks: Callable[[], dict[str, bool]],
    view: BrowserWatch,
) -> tuple[web.AppRunner, int, web.AppRunner, int]:
    """The public address (Socket.IO, and every other request relayed when ``http`` is
    on) and the admin one (health by ``checks``, metrics, and the Admin UI's ``view``
    when it is on): their runners and ports."""
    if settings.http.enabled:
        metrics.http_in_flight.set_function(lambda: passthrough.in_flight)
        app.router.add_route("*", "/{path:.*}", passthrough.handle)
    public, public_port = await server.start(app, settings.listen, metrics)
    admin_application = admin_app(metrics, checks)
    view.attach(admin_application)
    admin, admin_port = await server.start(admin_application, settings.admin_listen, metrics)
    return public, public_port, admin, admin_port


def announce(settings: Settings, public_port: int, admin_port: int) -> None:
    # the warning first: whoever waits for "listening" has seen it by then
    if settings.auth.mode == "none" and not _loopback(settings.listen):
        log.warning(
            "browsers_unauthenticated",
            listen=settings.listen,
            hint="auth.mode is none: anyone who reaches this address gets every event "
            "the backend broadcasts. Set auth.mode to jwt or backend, or listen on "
            "loopback behind something that authenticates.",
        )
    log.info(
        "listening",
        public=settings.listen,
        public_port=public_port,
        admin=settings.admin_listen,
        admin_port=admin_port,
        upstream=settings.upstream.url,
        upstream_mode=settings.upstream.mode,
        http_passthrough=settings.http_url if settings.http.enabled else None,
        new_room_mode=settings.new_room_mode.value,
        auth_mode=settings.auth.mode,
    )


@contextlib.asynccontextmanager
async def within_grace(settings: Settings, passthrough: Passthrough) -> AsyncIterator[None]:
    """A shutdown's steps, then the relayed uploads and downloads under way (new ones are
    still relayed: the load balancer may send some until it has seen /readyz fail), all
    within ``shutdown_grace``; past it, what is left is cut, and said."""
    try:
        async with asyncio.timeout(settings.shutdown_grace):
            yield
            await passthrough.idle()
    except TimeoutError:
        log.warning(
            "shutdown_grace_exceeded",
            shutdown_grace=settings.shutdown_grace,
            http_requests_cut=passthrough.in_flight,
        )


def _loopback(address: str) -> bool:
    host, _ = split_address(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False
