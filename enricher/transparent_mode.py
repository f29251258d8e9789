"""Transparent mode's assembly: no backend connection of enricher's own, each browser on
its own (see docs/architecture.md). :func:`started` builds the mode's parts and wires them;
the composition root (enricher/app.py) gives it what both modes share.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import structlog

from .access import Gate
from .across_sessions import SharedRooms
from .admin_view import BrowserWatch
from .admission import EngineSettings
from .backend import RoomFetcher
from .config import Settings
from .listening import announce, listen, within_grace
from .metrics import Metrics
from .passthrough import Passthrough
from .proxy_rules import Rules
from .refusals import RateLimit
from .relay import Relay, RelaySettings
from .sessions import session_limits

log = structlog.get_logger("enricher")


@dataclass
class RunningTransparent:
    """A started proxy in transparent mode: each browser on its own backend connection."""

    public_port: int
    admin_port: int
    relay: Relay
    rooms: SharedRooms
    metrics: Metrics


@contextlib.asynccontextmanager
async def started(
    settings: Settings,
    metrics: Metrics,
    fetcher: RoomFetcher,
    gate: Gate,
    passthrough: Passthrough,
    tls: ssl.SSLContext | None,
    *,
    engine: EngineSettings,
    rules: Rules,
    view: BrowserWatch,
) -> AsyncIterator[RunningTransparent]:
    """Transparent mode: no backend connection of enricher's own; each browser gets its
    own, made with its handshake (see enricher/sessions.py)."""
    loop = asyncio.get_running_loop()
    rooms = SharedRooms(fetcher.fetch_room, settings.hold_timeout, loop.time)
    # The browsers' own backend connections: as many as browsers (a WebSocket holds its
    # connection for its life: a pool limit would stop new browsers at the limit), and no
    # cookie jar (a cookie the backend sets for one browser never goes with another's).
    backend_sockets = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=tls if tls is not None else True, limit=0),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    relay = Relay(
        RelaySettings(
            backend=settings.upstream.url,
            backend_path=settings.upstream.socketio_path,
            connect_timeout=settings.upstream.connect_timeout,
            client_events=None
            if settings.client_events == "*"
            else frozenset(settings.client_events),
            max_queued_events=settings.websocket.max_queued_events,
            auth_timeout=settings.auth.timeout,
            limits=session_limits(settings.join_limits()),
            new_room_mode=settings.new_room_mode,
            max_disconnection=settings.recovery.max_disconnection
            if settings.recovery.enabled
            else None,
            # what may be replayed at once: half of what may wait for a browser
            max_missed=min(settings.recovery.max_events, settings.websocket.max_queued_events // 2),
            heartbeat=settings.ping_interval + settings.ping_timeout,
        ),
        engine,
        metrics,
        backend_sockets,
        rooms,
        rules=rules,
        tls=tls,
        gate=None if settings.auth.mode == "none" else gate,
        rate_limit=RateLimit(settings.client_event_rate, settings.client_event_burst, loop.time),
        view=view,
    )
    metrics.rooms_held.set_function(
        lambda: sum(session.rooms_held for session in relay.sessions.values())
    )
    metrics.watch_sizes(relay.sizes)
    public, public_port, admin, admin_port = await listen(
        settings,
        relay.app,
        passthrough,
        metrics,
        lambda: {
            "upstream": relay.backend_reachable,
            "rest": fetcher.reachable,
            "accepting": relay.accepting,
        },
        view,
    )
    announce(settings, public_port, admin_port)
    try:
        yield RunningTransparent(public_port, admin_port, relay, rooms, metrics)
    finally:
        relay.accepting = False
        async with within_grace(settings, passthrough):
            await relay.close()  # held rooms go out, browsers reconnect (to another replica)
        await public.cleanup()
        await admin.cleanup()
        await backend_sockets.close()
        log.info("stopped")
