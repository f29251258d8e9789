"""The HTTP pass-through's rules: which paths reach the backend, whose forwarding headers
are believed, and what of a request's and an answer's headers is relayed."""

from __future__ import annotations

import ipaddress

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from enricher.passthrough import Rules, _dot_segments, answer_headers, request_headers

BACKEND = URL("http://backend:3000")


@pytest.mark.parametrize(
    ("path", "relayed"),
    [
        ("/rooms/1", True),
        ("/", True),
        ("/socket.io/", False),  # enricher's own endpoint
        ("/socket.io", False),
        ("/socket.io/x", False),  # would be the backend's engine.io endpoint, around enricher
        ("/socket.io/socket.io.js", True),  # the client script the backend serves
        ("/socket.io/socket.io.min.js.map", True),
        ("/socket.io/socket.io.esm.min.js", True),
        ("/socket.io/a/socket.io.js", False),
        ("/socket.iox", True),
        ("/backend-io/", False),  # the backend's own Socket.IO path, when it has another
        ("/backend-io/socket.io.js", True),
    ],
)
def test_socketio_paths_stay_with_enricher(path: str, relayed: bool) -> None:
    rules = Rules(target=BACKEND, excluded=("/socket.io", "/backend-io"))
    assert rules.relayed(path) is relayed


@pytest.mark.parametrize(
    ("path", "relayed"),
    [
        ("/rooms", True),
        ("/rooms/1", True),
        ("/messages", True),
        ("/roomsx", False),
        ("/_control/rooms", False),
        ("/", False),
        ("/socket.io/socket.io.js", False),  # not under an allowed prefix either
    ],
)
def test_only_the_configured_prefixes_are_relayed(path: str, relayed: bool) -> None:
    rules = Rules(target=BACKEND, paths=("/rooms", "/messages/"))
    assert rules.relayed(path) is relayed


@pytest.mark.parametrize(
    ("raw", "dotted"),
    [
        ("/rooms/../_control/rooms", True),
        ("/rooms/%2e%2E/_control", True),  # Node's URL parser resolves these too
        ("/rooms/./1", True),
        ("/rooms/..", True),
        ("/rooms/..1/a.b", False),
        ("/rooms/%2e%2e%2f_control", True),  # some backends decode %2F before routing
    ],
)
def test_dot_segments_are_found_encoded_or_not(raw: str, dotted: bool) -> None:
    assert _dot_segments(raw) is dotted


def test_forwarding_headers_of_an_untrusted_peer_are_replaced() -> None:
    browser = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Host", "crm.example"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "evil.example"),
                ("Forwarded", "for=6.6.6.6"),
                ("Connection", "keep-alive, X-Secret-Hop"),
                ("X-Secret-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Proxy-Authorization", "Basic cHJveHk6eA=="),
                ("Authorization", "Bearer t"),
                ("Cookie", "session=1"),
                ("Cookie", "theme=dark"),
            ]
        )
    )
    relayed = request_headers(browser, "10.0.0.7", "http", "crm.example", trusted=False)
    assert list(relayed.items()) == [
        ("Authorization", "Bearer t"),
        ("Cookie", "session=1"),
        ("Cookie", "theme=dark"),
        ("X-Forwarded-For", "10.0.0.7"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "crm.example"),
        ("Via", "1.1 enricher"),
    ]


def test_forwarding_headers_of_a_trusted_proxy_are_extended() -> None:
    rules = Rules(target=BACKEND, trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
    assert rules.trusts("10.1.2.3") and not rules.trusts("192.168.1.1")
    assert not rules.trusts(None)
    ingress = CIMultiDictProxy(
        CIMultiDict(
            [
                ("X-Forwarded-For", "203.0.113.9, 10.9.9.9"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "crm.example"),
                ("Via", "1.1 ingress"),
            ]
        )
    )
    relayed = request_headers(ingress, "10.1.2.3", "http", "enricher:8080", trusted=True)
    assert relayed["X-Forwarded-For"] == "203.0.113.9, 10.9.9.9, 10.1.2.3"
    assert relayed["X-Forwarded-Proto"] == "https"
    assert relayed["X-Forwarded-Host"] == "crm.example"
    assert relayed["Via"] == "1.1 ingress, 1.1 enricher"


def test_answer_headers_keep_their_spelling_and_name_the_public_address() -> None:
    raw = [
        (b"content-type", b"application/json"),
        (b"Set-Cookie", b"a=1; Path=/"),
        (b"Set-Cookie", b"b=2; Path=/"),
        (b"Location", b"http://backend:3000/rooms?x=1"),
        (b"Content-Location", b"http://backend:3000/rooms"),
        (b"Connection", b"keep-alive"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
    ]
    headers = answer_headers(raw, BACKEND, URL("https://crm.example/any"))
    assert list(headers.items()) == [
        ("content-type", "application/json"),
        ("Set-Cookie", "a=1; Path=/"),
        ("Set-Cookie", "b=2; Path=/"),
        ("Location", "https://crm.example/rooms?x=1"),
        ("Content-Location", "http://backend:3000/rooms"),
        ("Via", "1.1 enricher"),
    ]
    elsewhere = answer_headers([(b"Location", b"http://backend:30001/x")], BACKEND, URL("/"))
    assert elsewhere["Location"] == "http://backend:30001/x"
