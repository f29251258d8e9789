"""TLS to the backend: one client context for the Socket.IO connection and REST alike."""

from __future__ import annotations

import ssl
from pathlib import Path

import structlog

log = structlog.get_logger("enricher")


def client_context(verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    """The context https:// and wss:// connections to the backend use: certificates and
    host names verified against ``ca_file`` (PEM) when given, else the system's CA bundle;
    nothing verified when ``verify`` is false, which is logged as a warning."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.warning(
            "upstream_tls_unverified",
            detail="upstream.tls_verify is false: the backend's certificate is not checked",
        )
    return context
