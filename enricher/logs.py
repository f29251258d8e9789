"""structlog set-up: one line per event, JSON when stderr is not a terminal."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"
# Fields whose whole value is a credential, whatever logs them.
SECRET_FIELDS = frozenset(
    {"authorization", "auth", "headers", "cookie", "password", "secret", "token", "api_key"}
)
# In any text: the password of a URL's userinfo, and credential-like query parameters.
_USERINFO = re.compile(r"(?<=://)([^/@\s:]*):[^/@\s]*@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:access_token|token|auth|api_key|apikey|key|password|secret|signature)=)[^&#\s]*"
)


def redact_text(text: str) -> str:
    """``text`` without URL passwords and credential-like query parameter values."""
    return _QUERY_SECRET.sub(rf"\g<1>{REDACTED}", _USERINFO.sub(rf"\g<1>:{REDACTED}@", text))


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no credential reaches a log line (upstream credentials come
    from settings and may sit in URLs, headers or connection errors)."""
    for key, value in event_dict.items():
        if key.lower() in SECRET_FIELDS:
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = redact_text(value)
    return event_dict


def configure_logging(level: str, fmt: str) -> None:
    """Log to stderr at ``level``; ``fmt`` is ``json``, ``console`` or ``auto``."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
