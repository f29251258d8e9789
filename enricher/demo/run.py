"""The demo's composition root: the simulated backend, the real proxy, the page.

The proxy is started with :func:`enricher.app.running`, the same code path as
``enricher serve``; only its upstream is the simulator instead of a real backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import signal
import sys
import webbrowser
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from ..app import running
from ..config import load_settings
from ..logs import configure_logging
from .page import page_app
from .script import Script
from .simulator import Simulator
from .stats import proxy_stats

HOST = "127.0.0.1"


class DemoError(Exception):
    """The demo cannot start; the message says why."""


@dataclass(frozen=True)
class DemoOptions:
    """What ``enricher demo`` was told."""

    port: int = 8000
    rate: float = 1.0
    chaos: bool = True
    open_browser: bool = False
    seed: int | None = None


@contextlib.asynccontextmanager
async def _serving(app: web.Application, port: int) -> AsyncIterator[int]:
    """Serve ``app`` on ``HOST:port`` (0: a free port); yields the port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, HOST, port).start()
        except OSError as exc:
            reason = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise DemoError(f"cannot listen on {HOST}:{port}: {reason}") from None
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def run_demo(options: DemoOptions, stop: asyncio.Event) -> None:
    """Run the demo until ``stop`` is set.

    Once everything is up (the proxy connected to the simulated backend), the page's URL
    is printed. A page port in use raises :class:`DemoError` before anything else starts.
    """
    rng = random.Random(options.seed)
    simulator = Simulator(Script(random.Random(rng.random()), chaos=options.chaos), rng)
    config: dict[str, Any] = {"chaos": options.chaos, "rate": options.rate}
    registries: list[CollectorRegistry] = []  # enricher's, once it runs
    page = page_app(config, lambda: proxy_stats(registries[0]) if registries else {})
    async with (
        _serving(page, options.port) as page_port,
        _serving(simulator.app, 0) as backend_port,
    ):
        backend_url = f"http://{HOST}:{backend_port}"
        settings = load_settings(
            None,
            **{
                "upstream.url": backend_url,
                "listen": f"{HOST}:0",
                "admin_listen": f"{HOST}:0",
                "cors_origins": "*",  # the page comes from another port
                # The chaos makes enricher log retries; keep the terminal to the URL line.
                "log.level": None if "ENRICHER_LOG__LEVEL" in os.environ else "error",
            },
        )
        configure_logging(settings.log.level, settings.log.format)
        try:
            async with running(settings) as proxy:
                config["backend_url"] = backend_url
                config["enricher_url"] = f"http://{HOST}:{proxy.public_port}"
                registries.append(proxy.metrics.registry)
                if settings.upstream.mode == "shared":  # its one connection, before events
                    await asyncio.wait_for(simulator.connected.wait(), 10)
                customers = asyncio.create_task(simulator.run(options.rate))
                url = f"http://{HOST}:{page_port}/"
                print(f"enricher demo: open {url}", flush=True)
                if options.open_browser:
                    await asyncio.to_thread(webbrowser.open, url)
                await stop.wait()
                customers.cancel()
                await asyncio.gather(customers, return_exceptions=True)
        finally:
            await simulator.close()


async def _main(options: DemoOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run_demo(options, stop)


def main(options: DemoOptions) -> int:
    """``enricher demo``: 0 after Ctrl-C or SIGTERM, 2 when it cannot start (port taken)."""
    try:
        asyncio.run(_main(options))
    except DemoError as exc:
        print(
            f"enricher demo: {exc} (another --port, or --port 0 for any free one)", file=sys.stderr
        )
        return 2
    return 0
