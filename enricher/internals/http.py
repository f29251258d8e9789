"""aiohttp's responses and server, where enricher changes what they write of their own."""

from __future__ import annotations

from aiohttp import web, web_response
from multidict import CIMultiDict


def name_server(name: str) -> None:
    """The ``Server`` header of every answer aiohttp makes, its answers to requests it
    cannot parse included (aiohttp names itself and its version; it has no setting)."""
    web_response.SERVER_SOFTWARE = name  # type: ignore[attr-defined]


class Relayed(web.StreamResponse):
    """An answer with the backend's headers only: aiohttp adds ``Server`` and a default
    ``Content-Type`` to the answers it writes, which the browser would not have had."""

    def __init__(
        self,
        status: int,
        reason: str | None,
        headers: CIMultiDict[str],
        *,
        send_headers_at_once: bool,
    ) -> None:
        super().__init__(status=status, reason=reason, headers=headers)
        self._not_sent = {"Server", "Content-Type"} - {name.title() for name in headers}
        self._send_headers_immediately = send_headers_at_once

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        for name in self._not_sent:
            self.headers.popall(name, None)
