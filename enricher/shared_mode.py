"""Shared mode's assembly: one backend connection for every browser (see
docs/architecture.md). :class:`SharedMode` builds the mode's parts and wires them; the
composition root (enricher/app.py) gives it what both modes share and starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from .access import Gate, RoomAccess
from .admin_view import BrowserWatch
from .admission import EngineSettings
from .backend import RoomFetcher
from .config import Settings
from .downstream import RESYNC, Downstream, DownstreamSettings
from .driver import JoinDriver
from .join import Join
from .listening import announce, listen, within_grace
from .metrics import Metrics
from .passthrough import Passthrough
from .proxy_rules import Rules
from .recovery import Recovery
from .shared import SharedLog
from .shared_entries import Entry
from .upstream import Upstream

log = structlog.get_logger("enricher")


@dataclass
class Running:
    """A started proxy in shared mode: its addresses and parts, for the caller (and tests)."""

    public_port: int
    admin_port: int
    upstream: Upstream
    downstream: Downstream
    driver: JoinDriver
    join: Join
    metrics: Metrics


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
        *,
        engine: EngineSettings,
        rules: Rules,
        view: BrowserWatch,
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
            engine,
            DownstreamSettings(
                client_events=settings.client_events,
                ack_timeout=settings.upstream.ack_timeout,
                client_event_rate=settings.client_event_rate,
                client_event_burst=settings.client_event_burst,
                auth_timeout=settings.auth.timeout,
                direct_broadcast=settings.websocket.direct_broadcast,
                max_queued_events=settings.websocket.max_queued_events,
            ),
            trusts=rules.trusts,
            gate=gate,
            room_access=room_access,
            recovery=self.recovery,
            shared=self.shared,
            view=view,
        )
        self.view = view
        self.driver = JoinDriver(self.join, fetcher.fetch_room, self.downstream.emit, metrics)
        metrics.watch_sizes(lambda: {**self.join.sizes(), **self.downstream.sizes()})

    async def on_connected(self) -> None:
        """Each (re)connection to the backend: its rooms joined again; after the first,
        browsers told that events may have been missed."""
        self.connections += 1
        if self.shared is not None:
            self.shared.rebase()  # what was appended before, it did not receive
        await self.downstream.backend_rooms.rejoin_all()
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
        public, public_port, admin, admin_port = await listen(
            settings,
            downstream.app,
            passthrough,
            self.metrics,
            lambda: {
                "upstream": upstream.connected,
                "rest": self.fetcher.reachable,
                "accepting": downstream.accepting,
            },
            self.view,
        )
        announce(settings, public_port, admin_port)
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
        async with within_grace(self.settings, passthrough):
            if self.shared is None:
                await self.upstream.stop()  # no new events from here
                await self.driver.flush("shutdown")  # held rooms go out, emits drain
                await self.downstream.close()  # browsers reconnect, to another replica
            else:
                await _hand_over(
                    self.settings, self.upstream, self.driver, self.downstream, self.shared
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
