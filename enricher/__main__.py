"""Command line: ``enricher serve [--config PATH] [--upstream URL] [--listen HOST:PORT] ...``."""

from __future__ import annotations

import argparse
import asyncio
import sys
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
