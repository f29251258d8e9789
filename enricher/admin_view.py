"""A live view of who is connected, for the Socket.IO Admin UI, on the admin listener.

The Admin UI (https://admin.socket.io, or its files hosted anywhere) is a page that
connects with socket.io-client to a server's ``/admin`` namespace, presenting a user name
and a password, and shows what the server tells it there: each socket (its id,
transport, handshake, rooms), connections and disconnections as they happen, and the
server's numbers every few seconds. This module speaks that protocol for enricher's
browsers, in both modes, read-only: nobody can emit, join, leave or disconnect from it.

python-socketio's own ``instrument()`` is not used: it describes the sockets of one
python-socketio server and patches python-engineio's socket class for the whole process.
In transparent mode enricher's browsers are no python-socketio sockets (their packets
pass through as they came), and in shared mode the patches would sit on every browser's
path. The modes tell :class:`AdminView` what happens instead; :data:`UNWATCHED` takes the
same calls and does nothing, when the view is off.

A handshake is shown without its credentials: ``Cookie``, ``Authorization`` and every
header named like one (a token, a key, a session...) and every query parameter but
engine.io's own read ``[redacted]``; ``Referer`` and ``Origin`` lose their query.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
import socket
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import engineio
import socketio
import structlog
from aiohttp import web
from prometheus_client import Counter

from . import jsonwire
from .logs import REDACTED
from .refusals import PacedLines

log = structlog.get_logger("enricher.admin_ui")

NAMESPACE = "/admin"
ADMINS = "enricher:admins"  # the room of the pages that logged in: nothing goes to others
STATS_EVERY = 2.0  # seconds, as python-socketio's and socket.io's own
MAX_QUEUED = 10_000  # changes waiting for the admin pages; beyond, they get the whole list
# What the page may show: sockets, rooms and clients (ALL_EVENTS), and the numbers of
# connections (AGGREGATED_EVENTS). No EMIT, JOIN, LEAVE or DISCONNECT: read-only. The
# events themselves (customers' messages) are never sent to it.
FEATURES = ["ALL_EVENTS", "AGGREGATED_EVENTS"]
# A header whose name says it may hold a credential: shown redacted.
SECRET_HEADER = re.compile(
    r"(?i)auth|cookie|token|key|pass|pwd|secret|sig|session|jwt|credential|ticket|code"
)
# Query parameters shown as they are: engine.io's own. Every other one may be a credential
# (as auth.mode backend takes them).
ENGINE_QUERY = frozenset({"EIO", "transport", "t", "sid", "j", "b64"})
URL_HEADERS = frozenset({"referer", "origin"})  # shown without their query


class BrowserWatch:
    """What each mode tells the view: its browsers' sockets coming and going. This one
    does nothing with it (``admin_ui.enabled`` false); :class:`AdminView` shows it."""

    def attach(self, app: web.Application) -> None:
        pass

    def watch(self, engine: engineio.AsyncServer) -> None:
        pass

    def describe(self, environ: dict[str, Any]) -> dict[str, Any] | None:
        return None

    def connected(self, nsp: str, sid: str, eio_sid: str, seen: dict[str, Any] | None) -> None:
        pass

    def disconnected(self, nsp: str, sid: str, reason: str) -> None:
        pass

    def joined(self, nsp: str, room: str, sid: str) -> None:
        pass

    def left(self, nsp: str, room: str, sid: str) -> None:
        pass

    async def run(self) -> None:
        pass


UNWATCHED = BrowserWatch()


def handshake(environ: dict[str, Any], issued: float) -> dict[str, Any]:
    """A socket's handshake as the Admin UI shows it, credentials redacted."""
    headers = {
        key[5:].lower().replace("_", "-"): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for name, value in headers.items():
        if SECRET_HEADER.search(name):
            headers[name] = REDACTED
        elif name in URL_HEADERS:
            headers[name] = value.partition("?")[0].partition("#")[0]
    query: dict[str, Any] = {}
    for name, values in parse_qs(environ.get("QUERY_STRING", "")).items():
        shown = values if name in ENGINE_QUERY else [REDACTED] * len(values)
        query[name] = shown[0] if len(shown) == 1 else shown
    return {
        "address": environ.get("REMOTE_ADDR", ""),
        "headers": headers,
        "query": query,
        "secure": environ.get("wsgi.url_scheme") == "https",
        "url": environ.get("PATH_INFO", ""),
        "issued": int(issued * 1000),
        "time": _iso(issued),
    }


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def _same(given: object, expected: bytes) -> bool:
    """Whether ``given`` is the string ``expected`` encodes, in constant time; anything
    else (not a string, not encodable) is not."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected)


class Counts:
    """What happened, counted per second, for the Admin UI's charts (its
    ``aggregatedEvents``): taken each time the numbers are sent."""

    def __init__(self) -> None:
        self._counts: dict[tuple[int, str], int] = {}

    def add(self, kind: str) -> None:
        key = (int(time.time()) * 1000, kind)
        self._counts[key] = self._counts.get(key, 0) + 1

    def take(self) -> list[dict[str, Any]]:
        counts, self._counts = self._counts, {}
        return [{"timestamp": at, "type": kind, "count": n} for (at, kind), n in counts.items()]


class AdminView(BrowserWatch):
    """The Admin UI's ``/admin`` namespace on its own python-socketio server, attached to
    the admin listener; the sockets of enricher's browsers as the modes report them."""

    def __init__(
        self,
        username: str,
        password: str,
        origins: list[str],
        logins: Counter,
        server_id: str | None = None,
    ) -> None:
        self._credentials = (username.encode(), password.encode())
        self._logins = logins  # enricher_admin_ui_logins_total{outcome}
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            cors_allowed_origins=origins,
            cors_credentials=True,
            namespaces=[NAMESPACE],  # no other namespace here, "/" included
            json=jsonwire,
        )
        self.sio.on("connect", self._admin_connect, namespace=NAMESPACE)
        self.sio.on("disconnect", self._admin_disconnect, namespace=NAMESPACE)
        self.server_id = server_id or socket.gethostname()
        self.sockets: dict[tuple[str, str], dict[str, Any]] = {}
        self._engine: engineio.AsyncServer | None = None
        self._admins: set[str] = set()
        # (event, arguments, to: one admin page's sid, or None for every page logged in)
        self._changes: deque[tuple[str, tuple[Any, ...], str | None]] = deque()
        self._overflowed = False
        self._wake = asyncio.Event()
        self._counts = Counts()
        self._started = time.time()
        self._refused = PacedLines(time.monotonic)

    def attach(self, app: web.Application) -> None:
        """Serve the namespace at ``/socket.io/`` of ``app`` (the admin listener's)."""
        self.sio.attach(app)

    def watch(self, engine: engineio.AsyncServer) -> None:
        """The engine.io server the browsers are on: their transports and numbers."""
        self._engine = engine

    # -- what the modes report -------------------------------------------------------

    def describe(self, environ: dict[str, Any]) -> dict[str, Any] | None:
        """What the view keeps of a browser's handshake (not the request itself)."""
        return handshake(environ, time.time())

    def connected(self, nsp: str, sid: str, eio_sid: str, seen: dict[str, Any] | None) -> None:
        """A socket is connected (``seen``: its handshake, from :meth:`describe`)."""
        now = time.time()
        record = {
            "id": sid,
            "clientId": eio_sid,
            "transport": self._transport(eio_sid) or "polling",
            "nsp": nsp,
            "data": {},
            "handshake": seen or {},
            "rooms": [sid],
        }
        self.sockets[(nsp, sid)] = record
        if self._admins:
            self._counts.add("rawConnection")
        self._tell("socket_connected", record, _iso(now))

    def disconnected(self, nsp: str, sid: str, reason: str) -> None:
        if self.sockets.pop((nsp, sid), None) is None:
            return
        if self._admins:
            self._counts.add("rawDisconnection")
        self._tell("socket_disconnected", nsp, sid, reason, _iso(time.time()))

    def joined(self, nsp: str, room: str, sid: str) -> None:
        record = self.sockets.get((nsp, sid))
        if record is not None and room not in record["rooms"]:
            record["rooms"].append(room)
            self._tell("room_joined", nsp, room, sid, _iso(time.time()))

    def left(self, nsp: str, room: str, sid: str) -> None:
        record = self.sockets.get((nsp, sid))
        if record is not None and room in record["rooms"]:
            record["rooms"].remove(room)
            self._tell("room_left", nsp, room, sid, _iso(time.time()))

    # -- the admin pages -------------------------------------------------------------

    async def _admin_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        given = auth if isinstance(auth, dict) else {}
        # both compared, whatever the first gives: no timing says which one was wrong
        right_user = _same(given.get("username"), self._credentials[0])
        if not (_same(given.get("password"), self._credentials[1]) and right_user):
            self._logins.labels("refused").inc()
            self._log_refusal(environ.get("REMOTE_ADDR"))
            # the message of socket.io's own admin server, which the page shows as such
            raise socketio.exceptions.ConnectionRefusedError("invalid credentials")
        self._logins.labels("accepted").inc()
        log.info("admin_ui_connected", remote=environ.get("REMOTE_ADDR"))
        await self.sio.enter_room(sid, ADMINS, namespace=NAMESPACE)
        self._admins.add(sid)
        self._upgrades()  # the pages already open hear of them too
        # what a page is told first, once its CONNECT is answered
        self._changes.append(("config", ({"supportedFeatures": FEATURES},), sid))
        self._changes.append(("all_sockets", (list(self.sockets.values()),), sid))
        self._wake.set()

    async def _admin_disconnect(self, sid: str, reason: Any = None) -> None:
        self._admins.discard(sid)

    def _log_refusal(self, remote: str | None) -> None:
        """A line per refused login, paced (:class:`PacedLines`)."""
        fields = self._refused.due("login")
        if fields is not None:
            log.warning("admin_ui_refused", remote=remote, **fields)

    def _tell(self, event: str, *args: Any) -> None:
        if not self._admins:
            return
        if len(self._changes) >= MAX_QUEUED:
            self._overflowed = True  # they get the whole list instead
            return
        self._changes.append((event, args, None))
        self._wake.set()

    async def run(self) -> None:
        """Forever: the changes to every admin page as they come, the numbers every
        ``STATS_EVERY`` seconds and the transports that changed (an upgrade)."""
        next_stats = time.monotonic() + STATS_EVERY
        while True:
            timeout = max(0.0, next_stats - time.monotonic())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self._flush()
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + STATS_EVERY
                if self._admins:
                    self._upgrades()
                    await self._flush()
                    await self.sio.emit(
                        "server_stats", self.stats(), to=ADMINS, namespace=NAMESPACE
                    )

    async def _flush(self) -> None:
        if self._overflowed:
            self._overflowed = False
            greetings = [change for change in self._changes if change[0] == "config"]
            self._changes.clear()
            self._changes.extend(greetings)
            self._changes.append(("all_sockets", (list(self.sockets.values()),), None))
        while self._changes:
            event, args, to = self._changes.popleft()
            await self.sio.emit(event, args, to=to or ADMINS, namespace=NAMESPACE)

    def _refresh_transports(self) -> list[dict[str, Any]]:
        """The records whose transport changed (an upgrade to WebSocket), updated."""
        changed = []
        for record in self.sockets.values():
            transport = self._transport(record["clientId"])
            if transport is not None and transport != record["transport"]:
                record["transport"] = transport
                changed.append(record)
        return changed

    def _upgrades(self) -> None:
        for record in self._refresh_transports():
            update = {"id": record["id"], "nsp": record["nsp"], "transport": record["transport"]}
            self._tell("socket_updated", update)

    def _transport(self, eio_sid: str) -> str | None:
        if self._engine is None:
            return None
        try:
            transport: str = self._engine.transport(eio_sid)
        except KeyError:  # gone meanwhile
            return None
        return transport

    def stats(self) -> dict[str, Any]:
        """The ``server_stats`` the Admin UI shows: this process and its browsers."""
        sockets = self._engine.sockets if self._engine is not None else {}
        namespaces: dict[str, int] = {}
        for nsp, _ in self.sockets:
            namespaces[nsp] = namespaces.get(nsp, 0) + 1
        return {
            "serverId": self.server_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "uptime": time.time() - self._started,
            "clientsCount": len(sockets),
            "pollingClientsCount": sum(1 for s in sockets.values() if not s.upgraded),
            "aggregatedEvents": self._counts.take(),
            "namespaces": [
                {"name": name, "socketsCount": count} for name, count in sorted(namespaces.items())
            ],
        }
