"""Who a request comes from, and how many browser connections each client has open
(``max_connections_per_client``), in both upstream modes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Container
from typing import Any

import structlog
from aiohttp import web

from .metrics import Metrics
from .refusals import PacedLines

log = structlog.get_logger("enricher.clients")

_CLIENT = web.RequestKey("enricher.client", str)  # in a handshake request: its client, counted
_SID = web.RequestKey("enricher.eio_sid", str)  # and the engine.io connection it opened


def client_address(request: web.BaseRequest, trusts: Callable[[str | None], bool]) -> str:
    """Whom a request comes from: its peer, or the address a trusted proxy in front of
    enricher saw (the last one it added to X-Forwarded-For)."""
    peer = request.remote or ""
    if trusts(peer):
        chain = ",".join(request.headers.getall("X-Forwarded-For", []))
        hops = [hop.strip() for hop in chain.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return peer


async def answered(response: web.StreamResponse) -> web.StreamResponse:
    """An answer made already, as the awaitable a handler gives."""
    return response


class ConnectionLimit:
    """At most ``limit`` engine.io connections at once from one client address (0: any
    number). A handshake past it is answered ``403 {"code": 4, "message": "Forbidden"}``,
    as a Node server answers one its ``allowRequest`` refuses (socket.io-client retries
    with its backoff), logged (paced per client) and counted.

    A handshake is counted from its request on (so that many at once cannot all pass), and
    ``connected`` ties it to the connection it opened; ``disconnected``, or the end of its
    request without a connection left open, gives it back."""

    def __init__(
        self,
        limit: int,
        trusts: Callable[[str | None], bool],
        sockets: Container[str],
        metrics: Metrics,
    ) -> None:
        self._limit = limit
        self._trusts = trusts
        self._sockets = sockets  # python-engineio's open connections, by id
        self._metrics = metrics
        self._count: dict[str, int] = {}  # connections (and handshakes) by client
        self._client_of: dict[str, str] = {}  # by engine.io connection id
        self._lines = PacedLines(asyncio.get_running_loop().time)

    def admit(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Awaitable[web.StreamResponse]:
        """A request to the Socket.IO path: its handler's answer, or the refusal. Only a
        handshake is counted, and only then does this keep a frame of its own for the
        request's life (to give the connection back when it ends without one)."""
        if not self._limit or request.method != "GET" or "sid" in request.query:
            return handler(request)
        client = client_address(request, self._trusts)
        if self._count.get(client, 0) >= self._limit:
            fields = self._lines.due(client)
            if fields is not None:
                log.warning(
                    "browser_refused",
                    reason="too_many_connections",
                    client=client,
                    limit=self._limit,
                    **fields,
                )
            self._metrics.browser_admissions.labels("too_many_connections").inc()
            return answered(web.json_response({"code": 4, "message": "Forbidden"}, status=403))
        return self._counted(request, handler, client)

    async def _counted(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        client: str,
    ) -> web.StreamResponse:
        self._count[client] = self._count.get(client, 0) + 1
        request[_CLIENT] = client
        try:
            return await handler(request)
        finally:
            sid = request.get(_SID)
            if sid is None:  # no connection opened
                self._give_back(client)
            elif sid not in self._sockets:  # refused, or ended: given back once
                self.disconnected(sid)

    def connected(self, eio_sid: str, environ: dict[str, Any]) -> None:
        """A handshake opened this connection."""
        request = environ.get("aiohttp.request")
        client = request.get(_CLIENT) if request is not None else None
        if request is not None and client is not None:
            self._client_of[eio_sid] = client
            request[_SID] = eio_sid

    def disconnected(self, eio_sid: str) -> None:
        client = self._client_of.pop(eio_sid, None)
        if client is not None:
            self._give_back(client)

    def _give_back(self, client: str) -> None:
        left = self._count.pop(client) - 1
        if left:
            self._count[client] = left
        else:
            self._lines.forget(client)

    def sizes(self) -> dict[str, int]:
        return {"browser_clients": len(self._count), "browser_client_of": len(self._client_of)}
