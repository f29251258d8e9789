"""The rules of an HTTP proxy (RFC 9110) as enricher applies them, pure: which request
targets are relayed, whose forwarding headers are believed, and what changes in the headers
on the way: hop-by-hop fields dropped (section 7.6.1), ``X-Forwarded-For`` / ``-Proto`` /
``-Host`` added, ``Via`` extended, a ``Location`` that names the backend made to name the
public address. The pass-through applies them to each relayed request and its answer; the
transparent relay applies them to a browser's handshake, sent on to the backend.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .config import as_http

# RFC 9110 7.6.1: meant for one connection, never forwarded; and the ones it names in
# Connection. Proxy-Authenticate/-Authorization are addressed to a proxy (11.7): this one.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# Set by enricher for the backend (Host: the backend's own), or answered here (Expect).
_REQUEST_OWN = frozenset({"host", "expect", "x-forwarded-for", "x-forwarded-proto"})
# Where a request came from or what it was, as proxies in front say: believed from trusted
# ones only (frameworks and CDNs read each of them as the client's address, port, path).
_FORWARDED = frozenset(
    {
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-ssl",
        "x-forwarded-scheme",
        "x-original-url",
        "x-original-host",
        "x-rewrite-url",
        "forwarded",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-cluster-client-ip",
    }
)
# A Host header's syntax (RFC 9110 7.2: uri-host [":" port]); anything else is not sent on.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(:[0-9]{1,5})?")
# The files a Node Socket.IO server serves under its path (its serveClient option).
_CLIENT_SCRIPT = re.compile(r"/socket\.io(\.msgpack|\.esm)?(\.min)?\.js(\.map)?")
_ENGINE_IO_QUERY = frozenset({"EIO", "transport", "sid"})
VIA = "1.1 enricher"


@dataclass(frozen=True)
class Rules:
    """What is relayed, and whose forwarding headers are believed."""

    target: URL  # the backend's base URL: scheme, host, port and an optional path prefix
    paths: tuple[str, ...] = ("/",)  # path prefixes relayed; others are answered 404
    # Socket.IO paths (enricher's, the backend's), without a trailing slash: not relayed,
    # but for the client script
    excluded: tuple[str, ...] = ("/socket.io",)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def refusal(self, method: str, raw_target: str) -> str | None:
        """Why a request target (as sent: path and query, still percent-encoded) is not
        relayed: ``bad_path`` (400) or ``not_relayed`` (404); None when it is."""
        raw_path, _, query = raw_target.partition("?")
        path = unquote(raw_path)
        # Browsers send origin-form targets with dot segments resolved and no backslashes;
        # anything else could be resolved by the backend into a path these rules never saw
        # (Node's URL parser takes %2E%2E for .., and \ for /), or name another host.
        if (
            not raw_path.startswith("/")
            or "\\" in path
            or any(segment in (".", "..") for segment in path.split("/"))
        ):
            return "bad_path"

        def under(prefix: str) -> bool:
            prefix = prefix.rstrip("/")
            return path == prefix or path.startswith(prefix + "/")

        for prefix in self.excluded:
            # engine.io takes every URL that starts with its path, as a string
            if raw_path.startswith(prefix) or path.startswith(prefix):
                # The backend's Socket.IO server serves its client script there
                # (<script src="/socket.io/socket.io.js">); anything else would reach the
                # backend's own Socket.IO endpoint, around enricher.
                script = (
                    method in ("GET", "HEAD")
                    and _CLIENT_SCRIPT.fullmatch(path[len(prefix) :])
                    and not _ENGINE_IO_QUERY.intersection(parse_qs(query, keep_blank_values=True))
                )
                return None if script and any(under(p) for p in self.paths) else "not_relayed"
        return None if any(under(p) for p in self.paths) else "not_relayed"

    def trusts(self, peer: str | None) -> bool:
        if peer is None or not self.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:  # a unix socket's peer
            return False
        return any(address in network for network in self.trusted_proxies)


def addressed(
    headers: CIMultiDictProxy[str], scheme: str, host: str, trusted: bool
) -> tuple[str, str]:
    """The scheme and host the browser addressed: the connection's, or what a proxy in front
    says when ``trusted``: the first of ``X-Forwarded-Proto`` and ``-Host`` (each proxy on the
    way may add its own; the first is the browser's side)."""
    if trusted:
        scheme = _first(headers.get("X-Forwarded-Proto")) or scheme
        host = _first(headers.get("X-Forwarded-Host")) or host
    return scheme, host


def _first(value: str | None) -> str:
    return (value or "").split(",")[0].strip()


def request_headers(
    headers: CIMultiDictProxy[str], peer: str | None, scheme: str, host: str, trusted: bool
) -> CIMultiDict[str]:
    """The browser's headers as the backend gets them: hop-by-hop ones dropped, the
    forwarding ones added (kept and extended when ``trusted`` says a proxy in front set them)."""
    dropped = HOP_BY_HOP | _connection_named(headers) | _REQUEST_OWN
    if not trusted:
        dropped |= _FORWARDED
    relayed = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in dropped)
    chain = [v for v in headers.getall("X-Forwarded-For", []) if trusted]
    if peer:
        chain.append(peer)
    if chain:
        relayed["X-Forwarded-For"] = ", ".join(chain)
    relayed["X-Forwarded-Proto"] = (trusted and headers.get("X-Forwarded-Proto")) or scheme
    if "X-Forwarded-Host" not in relayed and _HOST.fullmatch(host):
        relayed["X-Forwarded-Host"] = host
    _via(relayed)
    return relayed


def answer_headers(
    raw: Iterable[tuple[bytes, bytes]], target: URL, public: URL
) -> CIMultiDict[str]:
    """The backend's answer headers as the browser gets them, names spelled as it spelled
    them: hop-by-hop ones dropped, ``Via`` extended, a ``Location`` naming the backend made
    to name the public address."""
    headers = CIMultiDict(
        (name.decode("latin-1"), value.decode("utf-8", "replace")) for name, value in raw
    )
    dropped = HOP_BY_HOP | _connection_named(headers)
    answer: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() in dropped:
            continue
        answer.add(name, _location(value, target, public) if name.lower() == "location" else value)
    _via(answer)
    return answer


def _location(value: str, target: URL, public: URL) -> str:
    """A redirect into what is relayed, as the browser must follow it: the backend's base
    URL (path prefix included) becomes the public address, as nginx's proxy_redirect does."""
    base = str(target).rstrip("/")
    prefix = target.raw_path.rstrip("/")
    for relayed_at, public_at in ((base, str(public.origin())), (prefix, "")):
        if relayed_at and (value == relayed_at or value.startswith(relayed_at + "/")):
            return public_at + (value[len(relayed_at) :] or "/")
    return value


def _via(headers: CIMultiDict[str]) -> None:
    """RFC 9110 7.6.3: a proxy names itself in ``Via`` of each message it forwards."""
    hops = [*headers.popall("Via", []), VIA]
    headers["Via"] = ", ".join(hops)


def _connection_named(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    return {
        token.strip().lower()
        for value in headers.getall("Connection", [])
        for token in value.split(",")
        if token.strip()
    }


def target_url(value: str) -> URL:
    """The backend's base URL for HTTP from a Socket.IO URL (ws:// is http://). Credentials
    in it are enricher's (``upstream.url``): they never go with a browser's request."""
    return URL(as_http(value)).with_user(None).with_query(None).with_fragment(None)
