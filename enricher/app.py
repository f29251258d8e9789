"""The composition root: builds the pieces, wires them together, runs them. Nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import random
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web

from . import server
from .access import Gate, RoomAccess, make_gate
from .admission import EngineSettings
from .backend import CircuitBreaker, RoomFetcher
from .config import Settings, split_address
from .downstream import RESYNC, Downstream, DownstreamSettings
from .driver import JoinDriver
from .join import Join
from .metrics import Metrics
from .ops import admin_app
from .passthrough import Passthrough, Rules, UploadPace, target_url
from .recovery import Recovery
from .refusals import RateLimit
from .relay import Relay, RelaySettings, SharedRooms
from .sessions import session_limits
from .shared import Entry, SharedLog
from .tls import client_context
from .upstream import Upstream

log = structlog.get_logger("enricher")

ACCESS_CHECKS_AT_ONCE = 64  # connections to the backend for browsers' credentials checks
ANSWER_HEADER_LIMIT = 64 * 1024  # one header of the backend's answers (a big Set-Cookie)


@dataclass
class Running:
    """A started proxy: its addresses and parts, for the caller (and tests) to use."""

    public_port: int
    admin_port: int
    upstream: Upstream
    downstream: Downstream
    driver: JoinDriver
    join: Join
    metrics: Metrics


@dataclass
class RunningTransparent:
    """A started proxy in transparent mode: each browser on its own backend connection."""

    public_port: int
    admin_port: int
    relay: Relay
    rooms: SharedRooms
    metrics: Metrics


def _loopback(address: str) -> bool:
    host, _ = split_address(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running | RunningTransparent]:
    """Start the proxy; on exit, send every held room and stop cleanly."""
    metrics = Metrics()
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
        passthrough = _passthrough(settings, http_session, gate, metrics)
        if settings.upstream.mode == "transparent":
            async with _transparent(
                settings, metrics, fetcher, gate, passthrough, tls
            ) as started_transparent:
                yield started_transparent
            return
        room_access = (
            RoomAccess(
                access_session, fetcher.room_url, settings.auth.timeout, settings.auth.cache_ttl
            )
            if settings.auth.room_check
            else None
        )
        proxy = SharedMode(settings, metrics, fetcher, gate, room_access, tls)
        async with proxy.started(passthrough) as started:
            yield started


class SharedMode:
    """Shared mode: one backend connection for every browser (see docs/architecture.md).
    Builds its parts and wires them: the backend connection's events go to the join
    (:class:`JoinDriver`), its emits to the browsers (:class:`Downstream`); with the
    replicas' shared sequence (``recovery.store: redis``), broadcasts go through it."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        fetcher: RoomFetcher,
        gate: Gate,
        room_access: RoomAccess | None,
        tls: ssl.SSLContext | None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.fetcher = fetcher
        self.join = Join(
            limits=settings.join_limits(),
            new_room_mode=settings.new_room_mode,
            jitter=random.random,
        )
        metrics.rooms_held.set_function(lambda: len(self.join.pending_rooms))
        self.recovery = (
            Recovery(
                settings.recovery.max_disconnection,
                settings.recovery.max_events,
                asyncio.get_running_loop().time,
            )
            if settings.recovery.enabled
            else None
        )
        self.shared = (
            SharedLog(
                settings.recovery.redis_url,
                max_events=settings.recovery.max_events,
                # a room's snapshot or a message built twice is merged this long apart
                identity_ttl=max(600.0, settings.recovery.max_disconnection),
                session_ttl=settings.recovery.max_disconnection,
            )
            if self.recovery is not None and settings.recovery.store == "redis"
            else None
        )
        self.connections = 0  # to the backend, so far
        self.upstream = Upstream(
            settings.upstream,
            on_event=lambda event, args: self.driver.upstream_event(event, args),
            on_connected=self.on_connected,
            on_state=self.on_state,
            on_undecodable=lambda packet: self.driver.undecodable(packet),
            tls=tls,
        )
        self.downstream = Downstream(
            self.upstream,
            metrics,
            _engine(settings),
            DownstreamSettings(
                client_events=settings.client_events,
                ack_timeout=settings.upstream.ack_timeout,
                client_event_rate=settings.client_event_rate,
                client_event_burst=settings.client_event_burst,
                auth_timeout=settings.auth.timeout,
                direct_broadcast=settings.websocket.direct_broadcast,
                max_queued_events=settings.websocket.max_queued_events,
            ),
            trusts=_rules(settings).trusts,
            gate=gate,
            room_access=room_access,
            recovery=self.recovery,
            shared=self.shared,
        )
        self.driver = JoinDriver(self.join, fetcher.fetch_room, self.downstream.emit, metrics)
        metrics.watch_sizes(lambda: {**self.join.sizes(), **self.downstream.sizes()})

    async def on_connected(self) -> None:
        """Each (re)connection to the backend: its rooms joined again; after the first,
        browsers told that events may have been missed."""
        self.connections += 1
        if self.shared is not None:
            self.shared.rebase()  # what was appended before, it did not receive
        await self.downstream.rejoin_rooms()
        if self.connections > 1:
            # What the backend emitted meanwhile is lost: frontends may refetch.
            self.driver.announce(RESYNC, {"reason": "upstream_reconnected"})
            self.metrics.resyncs.labels("upstream_reconnected").inc()

    def on_state(self, connected: bool) -> None:
        self.metrics.upstream_state(connected)
        # The join asks REST about rooms that may have been created in between.
        if connected:
            self.driver.upstream_restored()
        else:
            self.driver.upstream_lost(self.upstream.last_heard)

    def on_store(self, up: bool) -> None:
        """The shared store reached or lost."""
        recovery, shared = self.recovery, self.shared
        self.metrics.recovery_store_up.set(int(up))
        if not up or recovery is None or shared is None or not shared.generation:
            return
        if recovery.epoch != shared.generation:
            # Offsets of the shared sequence from here on; the browsers connected now
            # got none of its events before this position.
            recovery.epoch = shared.generation
            self.downstream.renumber(shared.position)
        if recovery.last != shared.position:  # a gap follows, or numbers start anew
            recovery.restart_at(shared.position)

    async def _direct(self, entry: Entry) -> None:
        """A broadcast delivered here while the shared store is unreachable."""
        self.metrics.recovery_store_direct.inc()
        await self.downstream.sio.manager.deliver_direct(entry)

    @contextlib.asynccontextmanager
    async def started(self, passthrough: Passthrough) -> AsyncIterator[Running]:
        """Listening and running; on exit, stopped in order (:meth:`_stop`). A part that
        fails stops the whole (its TaskGroup cancels the caller)."""
        settings, upstream, downstream = self.settings, self.upstream, self.downstream
        public, public_port, admin, admin_port = await _sites(
            settings,
            downstream.app,
            passthrough,
            self.metrics,
            lambda: {
                "upstream": upstream.connected,
                "rest": self.fetcher.reachable,
                "accepting": downstream.accepting,
            },
        )
        _announce(settings, public_port, admin_port)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self.driver.run()),
                    group.create_task(upstream.run()),
                    group.create_task(downstream.expire_sessions()),
                ]
                if self.shared is not None:
                    manager = downstream.sio.manager
                    tasks.append(
                        group.create_task(
                            self.shared.run(manager.deliver_entry, self._direct, self.on_store)
                        )
                    )
                try:
                    yield Running(
                        public_port,
                        admin_port,
                        upstream,
                        downstream,
                        self.driver,
                        self.join,
                        self.metrics,
                    )
                finally:
                    await self._stop(passthrough)
                    for task in tasks:
                        task.cancel()
        finally:
            if self.shared is not None:
                await self.shared.close()
            await public.cleanup()
            await admin.cleanup()
            log.info("stopped")

    async def _stop(self, passthrough: Passthrough) -> None:
        self.downstream.accepting = False  # not ready from now on, new browsers refused
        async with _within_grace(self.settings, passthrough):
            if self.shared is None:
                await self.upstream.stop()  # no new events from here
                await self.driver.flush("shutdown")  # held rooms go out, emits drain
                await self.downstream.close()  # browsers reconnect, to another replica
            else:
                await _hand_over(
                    self.settings, self.upstream, self.driver, self.downstream, self.shared
                )


@contextlib.asynccontextmanager
async def _transparent(
    settings: Settings,
    metrics: Metrics,
    fetcher: RoomFetcher,
    gate: Gate,
    passthrough: Passthrough,
    tls: ssl.SSLContext | None,
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
        _engine(settings),
        metrics,
        backend_sockets,
        rooms,
        rules=_rules(settings),
        tls=tls,
        gate=None if settings.auth.mode == "none" else gate,
        rate_limit=RateLimit(settings.client_event_rate, settings.client_event_burst, loop.time),
    )
    metrics.rooms_held.set_function(
        lambda: sum(session.rooms_held for session in relay.sessions.values())
    )
    metrics.watch_sizes(relay.sizes)
    public, public_port, admin, admin_port = await _sites(
        settings,
        relay.app,
        passthrough,
        metrics,
        lambda: {
            "upstream": relay.backend_reachable,
            "rest": fetcher.reachable,
            "accepting": relay.accepting,
        },
    )
    _announce(settings, public_port, admin_port)
    try:
        yield RunningTransparent(public_port, admin_port, relay, rooms, metrics)
    finally:
        relay.accepting = False
        async with _within_grace(settings, passthrough):
            await relay.close()  # held rooms go out, browsers reconnect (to another replica)
        await public.cleanup()
        await admin.cleanup()
        await backend_sockets.close()
        log.info("stopped")


@contextlib.asynccontextmanager
async def _within_grace(settings: Settings, passthrough: Passthrough) -> AsyncIterator[None]:
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


async def _sites(
    settings: Settings,
    app: web.Application,
    passthrough: Passthrough,
    metrics: Metrics,
    checks: Callable[[], dict[str, bool]],
) -> tuple[web.AppRunner, int, web.AppRunner, int]:
    """The public address (Socket.IO, and every other request relayed when ``http`` is
    on) and the admin one (health by ``checks``, metrics): their runners and ports."""
    if settings.http.enabled:
        metrics.http_in_flight.set_function(lambda: passthrough.in_flight)
        app.router.add_route("*", "/{path:.*}", passthrough.handle)
    public, public_port = await server.start(app, settings.listen, metrics)
    admin, admin_port = await server.start(
        admin_app(metrics, checks), settings.admin_listen, metrics
    )
    return public, public_port, admin, admin_port


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


def _announce(settings: Settings, public_port: int, admin_port: int) -> None:
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
    if settings.auth.mode == "none" and not _loopback(settings.listen):
        log.warning(
            "browsers_unauthenticated",
            listen=settings.listen,
            hint="auth.mode is none: anyone who reaches this address gets every event "
            "the backend broadcasts. Set auth.mode to jwt or backend, or listen on "
            "loopback behind something that authenticates.",
        )


def _passthrough(
    settings: Settings, session: aiohttp.ClientSession, gate: Gate, metrics: Metrics
) -> Passthrough:
    http = settings.http
    rules = _rules(settings)
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


async def _hand_over(
    settings: Settings,
    upstream: Upstream,
    driver: JoinDriver,
    downstream: Downstream,
    shared: SharedLog,
) -> None:
    """Shutdown with the replicas' shared sequence: the browsers go first (to another
    replica, where they recover), and this replica stays in their backend rooms, appending,
    until they have: a room's messages meanwhile are in the sequence. Held rooms are left
    to the other replicas, which hold them too; the last one sends them as they are."""
    await downstream.close()  # sessions kept in Redis
    await downstream.handed_over(settings.shutdown_grace / 2)
    await upstream.stop()
    if await shared.others_alive():
        await driver.drain()
    else:
        await driver.flush("shutdown")


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
