"""The admin address: liveness, readiness and Prometheus metrics. Never public."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import Metrics


def admin_app(metrics: Metrics, checks: Callable[[], dict[str, bool]]) -> web.Application:
    """``/healthz`` (the process answers), ``/readyz`` (every check passes), ``/metrics``.

    ``checks()`` names each readiness check and whether it passes now.
    """

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        results = checks()
        ready = all(results.values())
        body = {
            "ready": ready,
            "checks": {name: "ok" if passed else "failing" for name, passed in results.items()},
        }
        return web.json_response(body, status=200 if ready else 503)

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    return app
