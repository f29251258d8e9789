"""The page server: the two-inbox page, ``/config.json`` and ``/api/stats``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

STATIC = Path(__file__).with_name("static")
_NO_STORE = {"Cache-Control": "no-store"}


def page_app(config: dict[str, Any], stats: Callable[[], dict[str, Any]]) -> web.Application:
    """The page's application.

    ``config`` is what ``/config.json`` answers (where the page's two inboxes connect);
    ``stats`` is called for each ``/api/stats`` request.
    """

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers=_NO_STORE)

    async def config_json(request: web.Request) -> web.Response:
        return web.json_response(config, headers=_NO_STORE)

    async def api_stats(request: web.Request) -> web.Response:
        return web.json_response(stats(), headers=_NO_STORE)

    async def no_favicon(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/config.json", config_json)
    app.router.add_get("/api/stats", api_stats)
    app.router.add_get("/favicon.ico", no_favicon)
    app.router.add_static("/static/", STATIC)
    return app
