"""Command line: ``enricher serve [--config PATH] [--upstream URL] [--listen HOST:PORT] ...``
and ``enricher demo [--port N] [--rate R] [--chaos/--no-chaos] [--open] [--seed N]``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import sys
from collections.abc import Callable
from pathlib import Path

from .config import ConfigError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enricher",
        description="Socket.IO enrichment proxy: complete rooms for chat sidebars.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the proxy",
        description="Run the proxy. Settings: defaults < --config file < ENRICHER_* < flags.",
    )
    serve.add_argument("--config", type=Path, help="YAML settings file (see config/default.yaml)")
    serve.add_argument("--upstream", metavar="URL", help="the backend's Socket.IO URL")
    serve.add_argument("--listen", metavar="HOST:PORT", help="public address for browsers")
    serve.add_argument("--admin-listen", metavar="HOST:PORT", help="admin address: health, metrics")
    _add_demo(commands)
    return parser


def _positive(value: str) -> float:
    number = float(value)
    if not 0 < number < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value}")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {value}")
    return number


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="see it work: a simulated backend, enricher, and a page with two inboxes",
        description="Start a simulated chat backend, enricher in front of it, and a page "
        "that shows an inbox straight from the backend next to one through enricher. "
        "Stop it with Ctrl-C.",
    )
    demo.add_argument(
        "--port", type=_port, default=8000, help="the page's port on 127.0.0.1 (0: any free one)"
    )
    demo.add_argument(
        "--rate", type=_positive, default=1.0, help="simulated messages per second (default 1)"
    )
    demo.add_argument(
        "--chaos",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the backend's real-world disorder: message before room, duplicates, "
        "a lost first message, slow or failing REST (default on)",
    )
    demo.add_argument("--open", action="store_true", help="open the page in a browser")
    demo.add_argument(
        "--seed",
        type=int,
        help="seed of the simulated customers: the same ones, in the same disorder, each run",
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .demo.run import DemoOptions
        from .demo.run import main as demo

        return demo(DemoOptions(args.port, args.rate, args.chaos, args.open, args.seed))
    try:
        settings = load_settings(
            args.config,
            **{
                "upstream.url": args.upstream,
                "listen": args.listen,
                "admin_listen": args.admin_listen,
            },
        )
    except ConfigError as exc:
        print(f"enricher: {exc}", file=sys.stderr)
        return 2
    from .app import serve
    from .logs import configure_logging

    configure_logging(settings.log.level, settings.log.format)
    _tune_gc()
    with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
        runner.run(serve(settings))
    return 0


def _tune_gc() -> None:
    """What is loaded at start is left out of every collection of Python's cycle collector
    (it is never garbage). Its thresholds stay Python's: at (50,000, 20, 10) transparent
    mode's 200 x 100 lost its full collections, but closed connections' reference cycles
    waited so long that RSS rose 43 MiB over 10,000 browsers in waves (tests/e2e/
    test_memory.py) before it levelled off."""
    gc.freeze()


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


if __name__ == "__main__":
    sys.exit(main())
