"""Edge authentication end to end: real socket.io-client browsers with and without valid
credentials in front of `enricher serve` with `auth.mode: jwt`."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from .conftest import Backend, Browsers, BrowsersFactory, EnricherFactory, Json, settle

pytestmark = [pytest.mark.e2e, pytest.mark.enricher]

SECRET = "an-e2e-secret-that-is-long-enough-for-hs256"
JWT_ENV = {
    "ENRICHER_AUTH__MODE": "jwt",
    "ENRICHER_AUTH__JWT__SECRET": SECRET,
    "ENRICHER_AUTH__JWT__AUDIENCE": "crm",
    "ENRICHER_AUTH__JWT__LEEWAY": "0",
}


def token(seconds: int = 300, **claims: object) -> str:
    return jwt.encode(
        {"aud": "crm", "exp": int(time.time()) + seconds, **claims}, SECRET, algorithm="HS256"
    )


def auth_flag(value: Json) -> list[str]:
    return ["--auth", json.dumps(value)]


async def test_sockets_without_valid_credentials_receive_nothing(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    proxy = await make_enricher(backend, **JWT_ENV)
    context = [backend.child, proxy.child]
    agents = await browsers(proxy.public_url, 3, context, auth_flag({"token": token()}))
    refused = {
        "token_missing": await browsers(proxy.public_url, 2, context, wait=False),
        "token_invalid": await browsers(
            proxy.public_url, 2, context, auth_flag({"token": "forged"}), wait=False
        ),
        "token_audience": await browsers(
            proxy.public_url, 2, context, auth_flag({"token": token(aud="x")}), wait=False
        ),
    }
    for reason, group in refused.items():
        errors = await group.wait_until(
            lambda g=group: (
                [i for i in g.child.items if i.get("type") == "connect_error"]
                if len([i for i in g.child.items if i.get("type") == "connect_error"]) == g.n
                else None
            ),
            f"{reason}: every browser refused",
        )
        assert {(e["error"], json.dumps(e["data"])) for e in errors} == {
            ("unauthorized", json.dumps({"reason": reason}))
        }

    sent = await backend.customer("6281100", "Budi Santoso", "private customer message")
    await backend.emit("agent:typing", {"room_id": sent["room_id"]})
    await settle(backend, agents, [sent["room_id"]])
    for dump in await agents.dump():
        assert dump["counts"]["new_room_complete"] == {sent["room_id"]: 1}
        assert dump["counts"]["new_message"] == {sent["message_id"]: 1}
    for group in refused.values():
        for dump in await group.dump():
            assert not dump["connected"] and dump["connects"] == 0
            assert dump["modern"] == [] and dump["other"] == []
            assert all(not counts for counts in dump["counts"].values())
    metrics = await proxy.metrics()
    assert metrics['enricher_browser_admissions_total{outcome="admitted"}'] == 3
    for reason in refused:
        assert metrics[f'enricher_browser_admissions_total{{outcome="{reason}"}}'] == 2


async def test_an_expired_token_must_be_renewed(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    """At the token's expiry the browser is disconnected; socket.io-client reconnects by
    itself, and gets in again only with a renewed token."""
    proxy = await make_enricher(backend, **JWT_ENV)
    context = [backend.child, proxy.child]
    group = await browsers(proxy.public_url, 2, context, auth_flag({"token": token(2)}))
    await group.renew_auth(0, {"token": token(300)})  # browser 0's frontend renews its token

    def reconnected() -> bool:
        lines = group.child.items
        again = any(
            i.get("type") == "connected" and i["browser"] == 0 and i["connects"] == 2 for i in lines
        )
        refused = any(i.get("type") == "connect_error" and i["browser"] == 1 for i in lines)
        return again and refused

    await group.wait_until(reconnected, "browser 0 back in, browser 1 refused", timeout=15)
    (error,) = [i for i in group.child.items if i.get("type") == "connect_error"]
    assert error["data"] == {"reason": "token_expired"}
    disconnects = [i for i in group.child.items if i.get("type") == "disconnected"]
    assert {(i["browser"], i["reason"]) for i in disconnects} == {
        (0, "transport close"),
        (1, "transport close"),
    }
    sent = await backend.customer("6281101", "Siti", "after the renewal")
    await group.wait_all("new_message", id=sent["message_id"], browsers={0})
    (renewed, expired) = await group.dump()
    assert renewed["connected"] and not expired["connected"]
    assert expired["counts"]["new_message"] == {}
    metrics = await proxy.metrics()
    assert metrics['enricher_browsers_dropped_total{reason="credentials_expired"}'] == 2


async def test_unauthenticated_beyond_loopback_is_warned_about(
    backend: Backend, make_enricher: EnricherFactory
) -> None:
    open_to_all = await make_enricher(backend, listen="0.0.0.0:0")
    (warning,) = open_to_all.logs("browsers_unauthenticated")
    assert warning["level"] == "warning" and "auth.mode is none" in warning["hint"]
    with_jwt = await make_enricher(backend, listen="0.0.0.0:0", **JWT_ENV)
    local = await make_enricher(backend)
    assert with_jwt.logs("browsers_unauthenticated") == local.logs("browsers_unauthenticated") == []


async def test_transparent_mode_backend_sees_each_agent(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    """In transparent mode (here by its former name, client_event_upstream: per_browser),
    the real Node backend gets each agent's events on a connection made with that agent's
    own credentials, and browsers still get each broadcast once."""
    proxy = await make_enricher(backend, ENRICHER_CLIENT_EVENT_UPSTREAM="per_browser")
    context = [backend.child, proxy.child]
    alice = await browsers(proxy.public_url, 1, context, auth_flag({"token": "alice"}))
    bob = await browsers(proxy.public_url, 1, context, auth_flag({"token": "bob"}))
    await alice.emit(0, "agent:typing", {"room_id": "r1"}, ack=False)
    # Acked after the one before it: one connection per agent keeps the agent's order.
    assert (await alice.emit(0, "echo", "from alice"))["args"] == ["from alice"]
    assert (await bob.emit(0, "echo", "from bob"))["args"] == ["from bob"]
    await backend.wait_connections(2)  # one per agent, none of enricher's own
    records = await backend.client_events()
    senders = {(r["args"][0] if r["event"] == "echo" else r["event"], r["token"]) for r in records}
    assert senders == {("from alice", "alice"), ("from bob", "bob"), ("agent:typing", "alice")}
    by_token = {r["token"]: r["sid"] for r in records}
    assert len({by_token["alice"], by_token["bob"]}) == 2
    metrics = await proxy.metrics()
    assert metrics["enricher_browser_upstream_connections"] == 2

    sent = await backend.customer("6281102", "Dewi", "broadcast once")
    for group in (alice, bob):
        await settle(backend, group, [sent["room_id"]])
        (dump,) = await group.dump()
        assert dump["counts"]["new_message"] == {sent["message_id"]: 1}
        assert dump["counts"]["new_room_complete"] == {sent["room_id"]: 1}


@pytest.mark.parametrize(
    "mode", [pytest.param("shared", marks=pytest.mark.upstream_mode("shared")), "transparent"]
)
async def test_credentials_revoked_while_connected_end_the_connection_at_the_next_check(
    mode: str, backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    """auth.mode backend asks about a connected browser's credentials again every
    recheck_interval: revoked, it is disconnected (and refused when it reconnects); a
    check the endpoint does not answer keeps it."""
    proxy = await make_enricher(
        backend,
        ENRICHER_AUTH__MODE="backend",
        ENRICHER_AUTH__BACKEND_URL=backend.url + "/me",
        ENRICHER_AUTH__RECHECK_INTERVAL="1",
        ENRICHER_AUTH__CACHE_TTL="0.1",
        ENRICHER_AUTH__TIMEOUT="0.5",
    )
    context = [backend.child, proxy.child]
    stays = await browsers(proxy.public_url, 1, context, auth_flag({"token": "agent-a"}))
    revoked = await browsers(proxy.public_url, 1, context, auth_flag({"token": "agent-b"}))

    # the endpoint silent: each browser's checks go unanswered, and both stay
    await backend._call("POST", "/_control/me", {"silent": True})
    start = len(proxy.child.items)
    for _ in range(4):  # two checks each
        await proxy.wait_log("browser_recheck_unanswered", start)
        start = len(proxy.child.items)
    await backend._call("POST", "/_control/me", {"silent": False, "revoke": "agent-b"})

    def refused_again(group: Browsers = revoked) -> Json | None:
        errors = [i for i in group.child.items if i.get("type") == "connect_error"]
        return errors[0] if errors else None

    error = await revoked.wait_until(refused_again, "the revoked browser refused when back")
    assert error["data"] == {"reason": "backend_refused"}
    disconnects = [i for i in revoked.child.items if i.get("type") == "disconnected"]
    assert [i["reason"] for i in disconnects] == ["transport close"]
    sent = await backend.customer("6281102", "Sari", "after the revocation")
    await stays.wait_all("new_message", id=sent["message_id"])
    assert not [i for i in stays.child.items if i.get("type") == "disconnected"]
    (gone,) = await revoked.dump()
    assert not gone["connected"] and gone["counts"]["new_message"] == {}
    metrics = await proxy.metrics()
    assert metrics['enricher_browsers_dropped_total{reason="credentials_revoked"}'] == 1
    assert proxy.logs("browser_credentials_revoked")
