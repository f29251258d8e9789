"""enricher end to end: the Node backend stub -> `python -m enricher serve` -> N real
socket.io-client browsers, judged the way docs/contract.md says: the sidebars the seed's
frontend handlers build from what the proxy emits must equal `GET /rooms/<id>`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from typing import Any

import aiohttp
import pytest

from .conftest import (
    Backend,
    Browsers,
    BrowsersFactory,
    Enricher,
    EnricherFactory,
    Json,
    barrier,
    check_messages_unchanged,
    settle,
    sidebar_check,
    start_backend,
)
from .conftest import stack as shared_stack

pytestmark = [pytest.mark.e2e, pytest.mark.enricher]

N = 20  # browsers in each test
HOLD = "1.0"  # ENRICHER_HOLD_TIMEOUT for the tests whose REST fails


async def stack(
    backend: Backend,
    make_enricher: EnricherFactory,
    browsers: BrowsersFactory,
    n: int = N,
    **env: str,
) -> tuple[Enricher, Browsers]:
    return await shared_stack(backend, make_enricher, browsers, n, **env)


def snapshots(group: Browsers, room_id: str) -> list[Json]:
    return [e["payload"] for e in group.events("new_room_complete", room_id)]


def assert_snapshot_is_rest(snapshot: Json, rest: Json, messages: list[Json]) -> None:
    """The snapshot has the shape docs/contract.md gives and, for a room nothing else happens to, REST's values."""
    last = messages[-1]
    expected = {
        "room_id": rest["room_id"],
        "room_phone": rest["room_phone"],
        "room_created_at": rest["room_created_at"],
        "leads_info": rest["leads_info"],
        "last_message": {
            "id": last["id"],
            "content_text": last["content_text"],
            "content_type": last["content_type"],
            "created_at": last["created_at"],
            "user_id": last["user_id"],
        },
        "last_message_text": last["content_text"],
        "last_message_timestamp": last["created_at"],
        "last_message_type": last["content_type"],
        "unread_count": rest["unread_count"],
        "message_count": rest["message_count"],
        "participants": [],
    }
    got = {key: snapshot.get(key, "<missing>") for key in expected}
    if isinstance(got["last_message"], dict):  # more keys there are fine
        got["last_message"] = {
            k: got["last_message"].get(k, "<missing>") for k in expected["last_message"]
        }
    assert got == expected
    for key in ("room_title", "room_updated_at"):
        assert key in snapshot, f"new_room_complete has no {key}"
    assert snapshot.get("enrichment") != "partial", (
        f"REST answered, yet: {snapshot.get('enrichment')!r}"
    )


SNAPSHOT_KEYS = {
    "room_id", "room_phone", "room_title", "room_created_at", "room_updated_at", "leads_info",
    "last_message", "last_message_text", "last_message_timestamp", "last_message_type",
    "unread_count", "message_count", "participants",
}  # fmt: skip
LAST_MESSAGE_KEYS = {"id", "content_text", "content_type", "created_at", "user_id"}


def without_message_identity(snapshot: Json) -> Json:
    """The snapshot without its last message's id and sender. In transparent mode each
    browser's join reads its own stream: when a message's event comes later than
    ``event_grace`` after a flat REST answer described it (no id, no sender), one browser's
    snapshot may carry REST's description and another's the event's own. Every other field
    must agree."""
    last = snapshot.get("last_message")
    if not isinstance(last, dict):
        return snapshot
    return {**snapshot, "last_message": {**last, "id": None, "user_id": None}}


def assert_one_snapshot_shape(payloads: list[Json], label: str) -> None:
    """Every browser got the same snapshot, with the keys docs/contract.md lists."""
    assert payloads, f"{label}: no new_room_complete"
    distinct = {json.dumps(without_message_identity(p), sort_keys=True) for p in payloads}
    assert len(distinct) == 1, f"{label}: browsers got different snapshots: {distinct}"
    ids = {p["last_message"]["id"] for p in payloads if isinstance(p.get("last_message"), dict)}
    assert len(ids - {None}) <= 1, f"{label}: snapshots name different last messages: {ids}"
    snapshot = payloads[0]
    assert snapshot.keys() >= SNAPSHOT_KEYS, f"{label}: missing {SNAPSHOT_KEYS - snapshot.keys()}"
    last = snapshot["last_message"]
    assert isinstance(last, dict), f"{label}: last_message {last!r}"
    assert last.keys() >= LAST_MESSAGE_KEYS, (
        f"{label}: last_message lacks {LAST_MESSAGE_KEYS - last.keys()}"
    )
    assert isinstance(snapshot["unread_count"], int) and isinstance(snapshot["message_count"], int)
    assert isinstance(snapshot["participants"], list)


async def assert_admin(proxy: Enricher, path: str, status: int) -> Json:
    async with aiohttp.ClientSession() as session, session.get(proxy.admin_url + path) as resp:
        body: Json = await resp.json(content_type=None)
        assert resp.status == status, f"GET {path} -> {resp.status} {body}, want {status}"
        return body


async def wait_ready(proxy: Enricher, ready: bool, start: int) -> None:
    """Wait for enricher to log the upstream coming up (or going down) after log line
    ``start``; /readyz must then say the same."""
    event = "upstream_connected" if ready else "upstream_disconnected"
    await proxy.wait_log(event, start=start, timeout=15)
    await assert_admin(proxy, "/readyz", 200 if ready else 503)


def assert_stayed_connected(group: Browsers) -> None:
    lines = [
        i
        for i in group.child.items
        if i.get("type") in ("connected", "disconnected", "connect_error")
    ]
    assert len(lines) == group.n and all(i["type"] == "connected" for i in lines), (
        f"browsers lost their connection to enricher: {lines[group.n :]}"
    )


# ------------------------------------------------------------------------------ the seed


async def test_scenario_1_new_customer(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    proxy, group = await stack(backend, make_enricher, browsers)
    sent = await backend.customer("6287879565390", "Budi Santoso", "Halo, mau tanya soal pinjaman")
    room_id = sent["room_id"]
    assert sent["new_room"]

    dump = await settle(backend, group, [room_id])
    await sidebar_check(backend, dump)
    await check_messages_unchanged(backend, group)

    rest, messages = await backend.room(room_id), await backend.messages(room_id)
    assert rest["unread_count"] == 1
    for snapshot in snapshots(group, room_id):
        assert_snapshot_is_rest(snapshot, rest, messages)
    for b in dump:
        assert b["counts"]["new_room_complete"] == {room_id: 1}
        assert b["counts"]["new_room"] == {room_id: 1}, (
            "new_room (default mode) is missing or repeated"
        )
        # By default new_room carries the same complete payload.
        legacy_payload = next(
            e["payload"] for e in group.events("new_room", room_id) if e["browser"] == b["browser"]
        )
        modern_payload = next(
            e["payload"]
            for e in group.events("new_room_complete", room_id)
            if e["browser"] == b["browser"]
        )
        assert legacy_payload == modern_payload
    assert (await assert_admin(proxy, "/healthz", 200)) == {"status": "ok"}
    assert (await assert_admin(proxy, "/readyz", 200))["ready"] is True


async def test_scenario_2_customer_writes_again_then_agent_replies(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    _, group = await stack(backend, make_enricher, browsers)
    first = await backend.customer("6287879565391", "Siti Aminah", "Pesan pertama")
    room_id = first["room_id"]
    await settle(backend, group, [room_id])

    second = await backend.customer("6287879565391", "Siti Aminah", "Pesan kedua")
    assert second == {"room_id": room_id, "message_id": second["message_id"], "new_room": False}
    reply = await backend.agent_reply(room_id, "Baik Bu Siti, kami bantu")
    await group.wait_all("new_message", reply)
    dump = await settle(backend, group)

    await sidebar_check(backend, dump)
    await check_messages_unchanged(backend, group)
    rest = await backend.room(room_id)
    assert (rest["last_message_text"], rest["unread_count"]) == ("Baik Bu Siti, kami bantu", 3)
    for b in dump:
        assert b["counts"]["new_room_complete"] == {room_id: 1}
        assert b["counts"]["new_message"] == {
            first["message_id"]: 1,
            second["message_id"]: 1,
            reply: 1,
        } or (
            # the first message may be counted in the snapshot instead (docs/contract.md rule 2)
            b["counts"]["new_message"] == {second["message_id"]: 1, reply: 1}
        )


# ------------------------------------------------------------------------------ orders and faults

# name -> (knobs for /_control/customer, whether REST fails so the snapshot is partial)
FAULTS: dict[str, tuple[dict[str, Any], bool]] = {
    "message_first": ({"order": "message_first"}, False),
    "duplicate_room": ({"duplicate_room": True}, False),
    "duplicate_message": ({"duplicate_message": True}, False),
    "drop_message_event": ({"drop_message_event": True}, False),
    "message_event_delay": ({"message_event_delay_ms": 300}, False),
    "rest_nested": ({"rest_shape": "nested"}, False),
    "rest_flat": ({"rest_shape": "flat"}, False),
    "rest_slow": ({"rest_delay_ms": 500}, False),
    # Not in the seed: REST answers before the first message is saved (room_gap_ms).
    "rest_before_message": ({"room_gap_ms": 300}, False),
    "message_first_duplicated_late": (
        {"order": "message_first", "duplicate_message": True, "message_event_delay_ms": 200},
        False,
    ),
    "no_lead": ({"name": None}, False),
    "rest_500": ({"rest_fail": "500"}, True),
    "rest_hang": ({"rest_fail": "hang"}, True),
    "rest_garbage": ({"rest_fail": "garbage"}, True),
    "rest_slower_than_the_hold": ({"rest_delay_ms": 2000}, True),
    "rest_500_no_lead": ({"rest_fail": "500", "name": None}, True),
}


async def run_fault(
    backend: Backend, group: Browsers, name: str, phone: str
) -> tuple[str, dict[str, set[str]]]:
    """One customer with the fault ``name``: its first message, then a second one and an
    agent reply (deltas on the snapshot). The room id and the names its sidebar may show."""
    knobs, partial = FAULTS[name]
    knobs = dict(knobs)
    lead = knobs.pop("name", f"Pelanggan {name}")
    sent = await backend.customer(phone, lead, f"{name}: pesan pertama", **knobs)
    room_id = sent["room_id"]
    assert sent["new_room"]
    await group.wait_all("new_room_complete", room_id, timeout=15)

    assert_one_snapshot_shape(snapshots(group, room_id), name)
    for snapshot in snapshots(group, room_id):
        if partial:
            assert snapshot.get("enrichment") == "partial", (
                f"{name}: REST failed, yet the snapshot says enrichment={snapshot.get('enrichment')!r}"
            )
        else:
            assert snapshot.get("enrichment") != "partial", f"{name}: REST answered, yet partial"

    await backend.customer(phone, lead, f"{name}: pesan kedua")
    reply = await backend.agent_reply(room_id, f"{name}: balasan agent")
    await group.wait_all("new_message", reply)
    # With REST failing, the name may come from new_room's minimal lead or be the fallback.
    names = {room_id: {lead or f"Customer {phone}", f"Customer {phone}"}} if partial else {}
    return room_id, names


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory, fault: str
) -> None:
    _, group = await stack(backend, make_enricher, browsers, ENRICHER_HOLD_TIMEOUT=HOLD)
    room_id, names = await run_fault(backend, group, fault, "628120000000")
    dump = await settle(backend, group)
    await sidebar_check(backend, dump, names=names)
    await check_messages_unchanged(backend, group)
    for b in dump:
        assert b["counts"]["new_room_complete"] == {room_id: 1}


async def test_all_faults_at_once(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    """Every fault as its own customer, all concurrently, with plain customers between."""
    _, group = await stack(backend, make_enricher, browsers, ENRICHER_HOLD_TIMEOUT=HOLD)

    async def plain(i: int) -> tuple[str, dict[str, set[str]]]:
        sent = await backend.customer(f"62813000000{i:02d}", f"Plain {i}", f"plain {i}")
        await backend.agent_reply(sent["room_id"], f"reply {i}")
        return sent["room_id"], {}

    results = await asyncio.gather(
        *(run_fault(backend, group, name, f"62814000000{i:02d}") for i, name in enumerate(FAULTS)),
        *(plain(i) for i in range(10)),
    )
    names: dict[str, set[str]] = {}
    for _, allowed in results:
        names.update(allowed)
    dump = await settle(backend, group, [room_id for room_id, _ in results])
    await sidebar_check(backend, dump, names=names)
    await check_messages_unchanged(backend, group)


async def test_rest_refused_rooms_go_out_by_the_deadline_and_rest_is_left_alone(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    """REST on a port nobody listens on: every room still goes out once, partial, by the
    hold deadline; after a few refusals the circuit breaker stops asking."""
    with socket.socket() as probe:  # a port that refuses connections
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    proxy, group = await stack(
        backend,
        make_enricher,
        browsers,
        ENRICHER_HOLD_TIMEOUT=HOLD,
        ENRICHER_REST__URL=f"http://127.0.0.1:{dead}",
    )
    sent = [await backend.customer(f"6281500000{i:02d}", f"Tolak {i}", "halo") for i in range(12)]
    for customer in sent:
        await group.wait_all("new_room_complete", customer["room_id"], timeout=15)
        for snapshot in snapshots(group, customer["room_id"]):
            assert snapshot["enrichment"] == "partial"
            assert snapshot["enrichment_reason"] in ("rest_connection", "rest_circuit_open")
    metrics = await proxy.metrics()
    refused = metrics.get('enricher_rest_requests_total{outcome="connection_error"}', 0)
    skipped = metrics.get('enricher_rest_requests_total{outcome="circuit_open"}', 0)
    # Without the breaker: a request per room and up to two retries each within the hold.
    assert refused <= 12 and skipped > 0, (refused, skipped)
    assert metrics["enricher_rest_circuit_open"] == 1
    body = await assert_admin(proxy, "/readyz", 503)
    assert body["checks"]["rest"] == "failing"
    dump = await settle(backend, group)
    for b in dump:
        assert sorted(b["counts"]["new_room_complete"]) == sorted(s["room_id"] for s in sent)
        assert set(b["counts"]["new_room_complete"].values()) == {1}


async def test_missed_new_room_never_duplicates(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    """docs/contract.md: a new_room can be missed entirely. The proxy cannot tell that room from one
    created before it started, so only what holds either way is checked: the messages
    pass at once and unchanged, and a room gets at most one snapshot."""
    _, group = await stack(backend, make_enricher, browsers, ENRICHER_HOLD_TIMEOUT=HOLD)
    sent = await backend.customer(
        "6281500000001", "Hilang", "new_room hilang", drop_room_event=True
    )
    await group.wait_all("new_message", sent["message_id"])
    more = await backend.customer("6281500000001", "Hilang", "pesan kedua")
    await group.wait_all("new_message", more["message_id"])
    dump = await settle(backend, group)
    await check_messages_unchanged(backend, group)
    for b in dump:
        for event, by_id in b["counts"].items():
            assert all(n == 1 for n in by_id.values()), f"browser {b['browser']}: {event} {by_id}"


async def test_existing_room_passes_through(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    before = await backend.customer("6281600000001", "Lama Sekali", "sebelum proxy jalan")
    _, group = await stack(backend, make_enricher, browsers)
    sent = await backend.customer("6281600000001", "Lama Sekali", "setelah proxy jalan")
    assert sent == {
        "room_id": before["room_id"],
        "message_id": sent["message_id"],
        "new_room": False,
    }

    await group.wait_all("new_message", sent["message_id"])
    dump = await settle(backend, group)
    await check_messages_unchanged(backend, group)
    for b in dump:
        assert b["counts"]["new_message"] == {sent["message_id"]: 1}
        assert b["counts"]["new_room_complete"] == {}, "a snapshot for a room that is not new"
        assert b["counts"]["new_room"] == {}


# ------------------------------------------------------------------------------ pass-through


async def test_other_events_pass_through_both_ways(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    _, group = await stack(backend, make_enricher, browsers)

    await backend.emit("some:event", {"a": 1}, "x")
    await group.wait_all("some:event", args=[{"a": 1}, "x"])
    await backend.emit("no:args")
    await group.wait_all("no:args", args=[])

    ack = await group.emit(3, "echo", {"x": 1})
    assert ack.get("args") == [{"x": 1}], f"echo's ack: {ack}"
    ack = await group.emit(4, "echo", 1, "two", [3], {"nested": {"k": None}})
    assert ack.get("args") == [1, "two", [3], {"nested": {"k": None}}], f"echo's ack: {ack}"
    await group.emit(5, "client:note", {"note": "no ack wanted"}, ack=False)

    await backend.child.wait_for(
        lambda item: item.get("event") == "client_event" and item.get("name") == "client:note",
        "the backend to log client:note",
    )
    events = [(e["event"], e["args"], e["has_ack"]) for e in await backend.client_events()]
    assert ("client:note", [{"note": "no ack wanted"}], False) in events
    assert ("echo", [{"x": 1}], True) in events
    assert ("echo", [1, "two", [3], {"nested": {"k": None}}], True) in events
    dump = await group.dump()
    for b in dump:
        assert {"event": "some:event", "args": [{"a": 1}, "x"]} in b["other"]
        assert sum(o["event"] == "some:event" for o in b["other"]) == 1


@pytest.mark.parametrize(
    "mode",
    [
        # enricher joins the backend's room once for all its browsers
        pytest.param("shared", marks=pytest.mark.upstream_mode("shared")),
        "transparent",  # each browser's own socket joins
    ],
)
async def test_room_join_and_leave(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory, mode: str
) -> None:
    _, group = await stack(backend, make_enricher, browsers)
    room_id = (await backend.customer("6281700000001", "Ruang", "join"))["room_id"]
    await settle(backend, group, [room_id])

    async def joined_is(count: int) -> None:
        await backend.child.wait_for(
            lambda item: (
                item.get("event") in ("room:join", "room:leave")
                and item.get("room_id") == room_id
                and item.get("count") == count
            ),
            f"the backend to log {count} socket(s) in room:{room_id}",
        )
        assert await backend.joined(room_id) == count

    for browser in (0, 1):
        ack = await group.emit(browser, "room:join", {"room_id": room_id})
        assert "error" not in ack, f"room:join from browser {browser} got no ack: {ack}"
    await joined_is(1 if mode == "shared" else 2)

    reply = await backend.agent_reply(room_id, "untuk yang join")
    await group.wait_all("room:new_message", reply, browsers=[0, 1])
    await barrier(backend, group)
    assert group.who_got("room:new_message", reply) == {0, 1}

    ack = await group.emit(0, "room:leave", {"room_id": room_id})
    assert "error" not in ack, f"room:leave from browser 0 got no ack: {ack}"
    reply = await backend.agent_reply(room_id, "hanya browser 1")
    await group.wait_all("room:new_message", reply, browsers=[1])
    await barrier(backend, group)
    assert group.who_got("room:new_message", reply) == {1}
    assert await backend.joined(room_id) == 1, "browser 1 is still in"

    ack = await group.emit(1, "room:leave", {"room_id": room_id})
    assert "error" not in ack, f"room:leave from browser 1 got no ack: {ack}"
    await joined_is(0)
    reply = await backend.agent_reply(room_id, "tidak ada yang join")
    await group.wait_all("new_message", reply)
    dump = await settle(backend, group)
    assert group.who_got("room:new_message", reply) == set()
    await sidebar_check(backend, dump)
    await check_messages_unchanged(backend, group)


# ------------------------------------------------------------------------------ modes


@pytest.mark.parametrize("mode", ["raw", "drop"])
async def test_new_room_mode(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory, mode: str
) -> None:
    _, group = await stack(backend, make_enricher, browsers, ENRICHER_NEW_ROOM_MODE=mode)
    sent = await backend.customer("6281800000001", "Mode Raw", "mode test")
    room_id = sent["room_id"]
    dump = await settle(backend, group, [room_id])
    await sidebar_check(backend, dump, sidebars=("modern",))
    await check_messages_unchanged(backend, group)

    if mode == "raw":
        rest = await backend.room(room_id)
        for b in dump:
            assert b["counts"]["new_room"] == {room_id: 1}
        for event in group.events("new_room", room_id):
            assert event["payload"] == {
                "room_id": room_id,
                "room_phone": "6281800000001",
                "room_title": "Personal",
                "room_created_at": rest["room_created_at"],
                "room_updated_at": event["payload"].get("room_updated_at"),
                "leads_info": {
                    "id": rest["leads_info"]["id"],
                    "phone": "6281800000001",
                    "name": "Mode Raw",
                },
                "unread_count": 0,
                "last_message": None,
                "participants": [],
            }
    else:
        assert group.events("new_room") == []


# ------------------------------------------------------------------------------ upstream loss


@pytest.mark.upstream_mode("shared")  # enricher's own connection
async def test_upstream_kick_reconnects(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    proxy, group = await stack(backend, make_enricher, browsers)
    first = await backend.customer("6281900000001", "Sebelum Kick", "sebelum")
    await settle(backend, group, [first["room_id"]])

    start = len(proxy.child.items)
    assert await backend.kick() == 1, "only the proxy should be connected to the backend"
    await backend.wait_connections(2, timeout=15)
    await wait_ready(proxy, True, start)

    # Browsers are told that events may have been missed, once.
    await group.wait_all("enricher:resync", args=[{"reason": "upstream_reconnected"}])
    second = await backend.customer("6281900000002", "Sesudah Kick", "sesudah")
    again = await backend.customer("6281900000001", "Sebelum Kick", "lagi")
    dump = await settle(backend, group, [second["room_id"]])
    assert group.who_got("new_message", again["message_id"]) == set(range(N))
    await sidebar_check(backend, dump)
    await check_messages_unchanged(backend, group)
    assert_stayed_connected(group)
    assert len(group.events("enricher:resync")) == N  # one each: none for the first connection


@pytest.mark.upstream_mode("shared")  # browsers stay connected to enricher
async def test_backend_restart(
    backend: Backend,
    make_enricher: EnricherFactory,
    browsers: BrowsersFactory,
    node_harness: Any,
) -> None:
    """Not in the brief's list, but in docs/contract.md: the upstream comes back after a backend
    restart; /readyz says 503 meanwhile; browsers stay connected."""
    proxy, group = await stack(backend, make_enricher, browsers)
    start = len(proxy.child.items)
    await backend.child.stop()
    await wait_ready(proxy, False, start)
    body = await assert_admin(proxy, "/readyz", 503)
    assert body.get("ready") is False and body["checks"]["upstream"] == "failing"
    assert (await assert_admin(proxy, "/healthz", 200)) == {"status": "ok"}

    start = len(proxy.child.items)
    backend.child, port = await start_backend(node_harness, backend.port)
    assert port == backend.port
    group.context[0] = backend.child
    await backend.wait_connections(1, timeout=20)
    await wait_ready(proxy, True, start)

    sent = await backend.customer("6281900000003", "Setelah Restart", "halo lagi")
    dump = await settle(backend, group, [sent["room_id"]])
    await sidebar_check(backend, dump)
    await check_messages_unchanged(backend, group)
    assert_stayed_connected(group)


async def test_backend_restart_in_transparent_mode(
    backend: Backend,
    make_enricher: EnricherFactory,
    browsers: BrowsersFactory,
    node_harness: Any,
) -> None:
    """Transparent mode: a backend restart ends each browser's connection, as it would have
    directly; while the backend is down their reconnections fail (and /readyz says 503), and
    once it is back every browser is back on its own, with the contract holding."""
    proxy, group = await stack(backend, make_enricher, browsers)
    start = len(proxy.child.items)
    await backend.child.stop()
    await proxy.wait_log("backend_connect_failed", start=start, timeout=15)
    body = await assert_admin(proxy, "/readyz", 503)
    assert body["checks"]["upstream"] == "failing"

    backend.child, port = await start_backend(node_harness, backend.port)
    assert port == backend.port
    group.context[0] = backend.child
    await backend.wait_connections(group.n, timeout=30)  # each browser, by itself
    await assert_admin(proxy, "/readyz", 200)

    sent = await backend.customer("6281900000004", "Setelah Restart", "halo lagi")
    dump = await settle(backend, group, [sent["room_id"]])
    await sidebar_check(backend, dump)
    reconnected = [i for i in group.child.items if i.get("type") == "connected"]
    assert len(reconnected) >= 2 * group.n, "every browser connected again"


async def test_a_thousand_browsers_one_rest_call_per_new_room(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    """Transparent mode: 1,000 browsers, each on its own backend connection, see each new
    room; each gets its snapshot, and REST is asked once per room (the backend's count, and
    enricher's metric)."""
    proxy = await make_enricher(backend)
    group = await browsers(
        proxy.public_url,
        1000,
        context=[backend.child, proxy.child],
        flags=["--transports", "websocket"],
    )
    rooms = [
        (await backend.customer(f"62817000000{i}", f"Pelanggan {i}", "halo"))["room_id"]
        for i in range(3)
    ]
    for room_id in rooms:
        await group.wait_all("new_room_complete", room_id, timeout=60)
    assert await backend.rest_calls() == dict.fromkeys(rooms, 1)
    metrics = await proxy.metrics()
    asked = sum(v for k, v in metrics.items() if k.startswith("enricher_rest_requests_total{"))
    assert asked == len(rooms)


async def test_sigterm_sends_held_rooms_and_hands_browsers_over(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    """SIGTERM: the room held for a hanging REST goes out (partial, shutdown), then every
    browser's connection closes the way socket.io-client reconnects after, and enricher
    exits 0 well within its grace period."""
    proxy, group = await stack(backend, make_enricher, browsers, ENRICHER_HOLD_TIMEOUT="30")
    webhook = await backend.customer("6281900000009", "Pamit", "sebelum berhenti", rest_fail="hang")
    room_id = webhook["room_id"]
    await group.wait_all("new_message", webhook["message_id"])
    assert group.events("new_room_complete", room_id) == []  # held: REST hangs

    started = asyncio.get_running_loop().time()
    code = await proxy.child.stop(timeout=15)
    took = asyncio.get_running_loop().time() - started
    assert code == 0, proxy.child.tail()
    assert took < 10, f"shutdown took {took:.1f}s"
    await group.wait_until(
        lambda: len([i for i in group.child.items if i.get("type") == "disconnected"]) == group.n,
        "every browser disconnected",
    )
    # each browser got the held room before its connection closed
    assert len(snapshots(group, room_id)) == group.n
    for snapshot in snapshots(group, room_id):
        assert snapshot["enrichment"] == "partial"
        assert snapshot.get("enrichment_reason") == "shutdown"
        assert snapshot["last_message_text"] == "sebelum berhenti"
    reasons = {i["reason"] for i in group.child.items if i.get("type") == "disconnected"}
    # "transport close": socket.io-client reconnects by itself ("io server disconnect" would not)
    assert reasons == {"transport close"}


async def test_ctrl_c_stops_cleanly(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    """SIGINT (Ctrl-C in a terminal) after the backend connection is up: the same clean
    shutdown as SIGTERM, exit 0, no traceback."""
    proxy, _ = await stack(backend, make_enricher, browsers, n=2)
    proxy.child.proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proxy.child.proc.wait(), 15) == 0, proxy.child.tail()
    await proxy.wait_log("stopped")
    assert not any("Traceback" in line for line in proxy.child.text), proxy.child.tail()
