"""The HTTP pass-through's rules: which paths reach the backend, whose forwarding headers
are believed, and what of a request's and an answer's headers is relayed."""

from __future__ import annotations

import ipaddress

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from enricher.access import Credentials
from enricher.proxy_rules import Rules, answer_headers, request_headers, target_url

BACKEND = URL("http://backend:3000")


@pytest.mark.parametrize(
    ("method", "target", "refusal"),
    [
        ("GET", "/rooms/1?x=%2F", None),
        ("POST", "/", None),
        ("GET", "/socket.io/", "not_relayed"),  # enricher's own endpoint
        ("GET", "/socket.io", "not_relayed"),
        ("GET", "/socket.io/x", "not_relayed"),  # the backend's engine.io, around enricher
        ("GET", "/socket.iox?EIO=4&transport=polling", "not_relayed"),  # engine.io takes it
        ("GET", "/socket%2Eio/?EIO=4", "not_relayed"),
        ("GET", "/socket.io/socket.io.js", None),  # the client script the backend serves
        ("HEAD", "/socket.io/socket.io.min.js.map", None),
        ("GET", "/socket.io/socket.io.esm.min.js?v=3", None),
        # a backend without serveClient takes these as engine.io requests
        ("GET", "/socket.io/socket.io.js?EIO=4&transport=polling", "not_relayed"),
        ("POST", "/socket.io/socket.io.js?sid=abc", "not_relayed"),
        ("POST", "/socket.io/socket.io.js", "not_relayed"),
        ("GET", "/socket.io/a/socket.io.js", "not_relayed"),
        ("GET", "/backend-io/", "not_relayed"),  # the backend's own path, when another
        ("GET", "/backend-io/socket.io.js", None),
    ],
)
def test_socketio_paths_stay_with_enricher(method: str, target: str, refusal: str | None) -> None:
    rules = Rules(target=BACKEND, excluded=("/socket.io", "/backend-io"))
    assert rules.refusal(method, target) == refusal


@pytest.mark.parametrize(
    ("target", "refusal"),
    [
        ("/rooms", None),
        ("/rooms/1?room_id=2", None),
        ("/messages?room_id=1", None),
        ("/roomsx", "not_relayed"),
        ("/_control/rooms", "not_relayed"),
        ("/", "not_relayed"),
        ("/socket.io/socket.io.js", "not_relayed"),  # not under an allowed prefix either
        # Ways out of the allowed prefixes for a backend that resolves them
        ("/rooms/../_control/rooms", "bad_path"),
        ("/rooms/%2e%2E/_control", "bad_path"),  # Node's URL parser resolves these too
        ("/rooms/./1", "bad_path"),
        ("/rooms/..", "bad_path"),
        ("/rooms/%2e%2e%2f_control", "bad_path"),  # some backends decode %2F before routing
        ("/rooms/..\\_control/rooms", "bad_path"),  # WHATWG URLs take \ for /
        ("/rooms/.%2E%5C_control", "bad_path"),
        ("http://elsewhere/rooms", "bad_path"),  # absolute-form: another host
        ("host://x/rooms", "bad_path"),
        ("*", "bad_path"),
        ("/rooms/..1/a.b", None),
    ],
)
def test_only_the_configured_prefixes_are_relayed(target: str, refusal: str | None) -> None:
    rules = Rules(target=BACKEND, paths=("/rooms", "/messages/"))
    assert rules.refusal("GET", target) == refusal


def test_forwarding_headers_of_an_untrusted_peer_are_replaced() -> None:
    browser = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Host", "crm.example"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "evil.example"),
                ("Forwarded", "for=6.6.6.6"),
                ("X-Forwarded-Port", "443"),
                ("X-Forwarded-Prefix", "/admin"),
                ("X-Original-URL", "/admin/users"),
                ("X-Client-IP", "6.6.6.6"),
                ("CF-Connecting-IP", "6.6.6.6"),
                ("X-Real-IP", "6.6.6.6"),
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


def test_a_host_that_is_no_host_is_not_forwarded() -> None:
    browser = CIMultiDictProxy(CIMultiDict([("Host", "a b\\c")]))
    relayed = request_headers(browser, "10.0.0.7", "http", "a b\\c", trusted=False)
    assert "X-Forwarded-Host" not in relayed
    for host in ("crm.example", "crm.example:8443", "10.0.0.1:80", "[::1]:8080"):
        relayed = request_headers(browser, "10.0.0.7", "http", host, trusted=False)
        assert relayed["X-Forwarded-Host"] == host


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
    elsewhere = answer_headers(
        [(b"Location", b"http://backend:30001/x")], BACKEND, URL("https://crm.example")
    )
    assert elsewhere["Location"] == "http://backend:30001/x"


@pytest.mark.parametrize(
    ("location", "public"),
    [
        ("http://backend:3000/api/rooms?x=1", "https://crm.example/rooms?x=1"),
        ("http://backend:3000/api", "https://crm.example/"),
        ("/api/rooms", "/rooms"),
        ("/apix", "/apix"),
        ("/other", "/other"),  # outside what is relayed: as the backend said
        ("http://backend:3000/other", "http://backend:3000/other"),
    ],
)
def test_redirects_under_a_path_prefix_name_what_the_browser_asks_for(
    location: str, public: str
) -> None:
    target = URL("http://backend:3000/api/")
    headers = answer_headers([(b"Location", location.encode())], target, URL("https://crm.example"))
    assert headers["Location"] == public


def test_credentials_in_the_backend_url_never_go_with_a_browser_request() -> None:
    assert str(target_url("wss://svc:s3cret@backend:3000/")) == "https://backend:3000/"


def test_a_request_presents_the_credentials_a_handshake_would() -> None:
    """``http.auth: edge`` checks a request with the same gate as a socket: its cookie and
    Authorization go to ``auth.backend_url``, its Bearer token (else ``?token=``) to jwt."""
    headers = CIMultiDict([("Cookie", "session=1"), ("Authorization", "Bearer t0k"), ("X", "y")])
    credentials = Credentials.from_http(headers, "room_id=1&token=other")
    assert credentials.token == "t0k"
    assert credentials.forwarded() == {"Cookie": "session=1", "Authorization": "Bearer t0k"}
    by_query = Credentials.from_http(CIMultiDict(), "token=q&x=1")
    assert (by_query.token, by_query.forwarded()) == ("q", {"Authorization": "Bearer q"})
    assert Credentials.from_http(CIMultiDict(), "").forwarded() == {}
