"""Bad input and bounds through the real process: what browsers may send (its size), what
the backend may send (any size), answered as the README says."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import (
    Backend,
    BrowsersFactory,
    EnricherFactory,
    check_messages_unchanged,
    sidebar_check,
    stack,
)
from .test_e2e import assert_one_snapshot_shape, snapshots

pytestmark = [pytest.mark.e2e, pytest.mark.enricher]

LIMIT = 1_000_000  # max_payload_bytes, by default


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_browser_message_over_the_size_limit_closes_only_its_connection(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory, transport: str
) -> None:
    proxy, group = await stack(
        backend,
        make_enricher,
        browsers,
        2,
        ["--transports", transport],
    )
    # Just under the limit (the packet adds its event name and brackets): forwarded, whole
    # (a polling request's body arrives in parts: they used to be lost but the first).
    under = "u" * (LIMIT - 100)
    assert (await group.emit(0, "echo", under))["args"] == [under]

    # Over it: the connection closes, with a log line and a metric; socket.io-client
    # reconnects by itself, and the other browser never notices.
    await group.emit(0, "echo", "o" * (2 * LIMIT), ack=False)
    rejected = await proxy.wait_log("payload_rejected")
    assert rejected["reason"] == "too_large" and rejected["transport"] == transport
    assert rejected["size"] > 2 * LIMIT and rejected["limit"] == LIMIT
    assert rejected["sid"] and rejected["source"] == "browser"
    await group.wait_until(
        lambda: any(c["browser"] == 0 and c["connects"] == 2 for c in group.connected_lines()),
        "browser 0 to reconnect",
    )
    metrics = await proxy.metrics()
    assert metrics['enricher_client_events_total{event="other",outcome="too_large"}'] == 1
    forwarded = [e for e in backend.child.items if e.get("event") == "client_event"]
    assert [len(e["args"][0]) for e in forwarded] == [len(under)]  # the big one never went on

    assert (await group.emit(0, "echo", "after"))["args"] == ["after"]
    assert (await group.emit(1, "echo", "other"))["args"] == ["other"]
    assert [c["browser"] for c in group.connected_lines()].count(1) == 1


async def test_a_backend_event_of_any_size_reaches_every_browser(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    """6 MB from the backend: above aiohttp's default WebSocket message limit (4 MiB) and
    far above ``max_payload_bytes``, which is for browsers only."""
    proxy, group = await stack(
        backend, make_enricher, browsers, 2, ENRICHER_UPSTREAM__TRANSPORTS='["websocket"]'
    )
    await backend.burst(2, [6_000_000, 10])
    await group.wait_seqs(2, timeout=30)
    for browser in range(2):
        assert [(s["n"], s["ok"]) for s in group.seqs(browser)] == [(0, True), (1, True)]
    assert not proxy.logs("upstream_disconnected")


# ------------------------------------------------------------------------------ REST of wrong types

# name -> knobs of the room's GET /rooms/<id>: a body or fields of the wrong type.
WRONG_REST: dict[str, dict[str, Any]] = {
    "data_list": {"rest_body": "data_list"},
    "data_null": {"rest_body": "data_null"},
    "data_string": {"rest_body": "data_string"},
    "body_list": {"rest_body": "body_list"},
    "leads_info_string": {"rest_patch": {"leads_info": "Pelanggan"}},
    "leads_info_list": {"rest_patch": {"leads_info": [{"name": "Pelanggan"}]}},
    "lead_name_number": {"rest_patch": {"leads_info": {"name": 12345, "phone": 1}}},
    "unread_count_string": {"rest_patch": {"unread_count": "7"}},
    "unread_count_garbage": {"rest_patch": {"unread_count": "tujuh", "message_count": -3}},
    "unread_count_float": {"rest_patch": {"unread_count": 1.5, "message_count": True}},
    "last_message_number": {"rest_shape": "nested", "rest_patch": {"last_message": 42}},
    "last_message_list": {"rest_shape": "nested", "rest_patch": {"last_message": ["x"]}},
    "last_message_fields": {
        "rest_patch": {"last_message_text": {"t": 1}, "last_message_timestamp": [], "last_message_type": 7}
    },
    "room_created_at_garbage": {
        "rest_patch": {"room_created_at": "kemarin sore", "room_updated_at": {"x": 1}}
    },
    "room_phone_number": {"rest_patch": {"room_phone": 6281, "room_title": None}},
    "participants_string": {"rest_patch": {"participants": "semua"}},
    "room_id_other": {"rest_patch": {"room_id": "another-room"}},
    "room_id_number": {"rest_patch": {"room_id": 7}},
    "everything_null": {
        "rest_patch": {
            "room_phone": None, "room_title": None, "leads_info": None, "unread_count": None,
            "message_count": None, "participants": None, "last_message_text": None,
            "last_message_timestamp": None, "room_created_at": None,
        }
    },
}  # fmt: skip


async def test_rest_answers_of_the_wrong_type_still_give_one_snapshot_per_room(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    proxy, group = await stack(backend, make_enricher, browsers, 3, ENRICHER_HOLD_TIMEOUT="1.0")
    phones = {name: f"62815{i:07d}" for i, name in enumerate(WRONG_REST)}
    sent = {
        name: await backend.customer(phones[name], f"Pelanggan {name}", f"{name}: halo", **knobs)
        for name, knobs in WRONG_REST.items()
    }
    room_of = {name: s["room_id"] for name, s in sent.items()}
    for name, room_id in room_of.items():
        await group.wait_all("new_room_complete", room_id, timeout=15)
        assert_one_snapshot_shape(snapshots(group, room_id), name)
    await backend.emit("after", 1)
    await group.wait_all("after", args=[1])
    dump = await group.dump()
    for b in dump:
        assert b["counts"]["new_room_complete"] == {r: 1 for r in room_of.values()}
    names = {
        room_id: {f"Pelanggan {name}", f"Customer {phones[name]}"}
        for name, room_id in room_of.items()
    }
    # REST said "7": the truth read here bypasses the room's REST knobs, so that room's
    # unread count is checked on its own.
    told_seven = room_of["unread_count_string"]
    for b in dump:
        (entry,) = [e for e in b["modern"] if e["room_id"] == told_seven]
        assert entry["unread_count"] == 7
    await sidebar_check(
        backend, dump, rooms=[r for r in room_of.values() if r != told_seven], names=names
    )
    await check_messages_unchanged(backend, group)
    assert (await backend.rest_calls()).keys() == set(room_of.values())  # REST was asked
    assert not [line for line in proxy.child.text if "Traceback" in line]
    assert proxy.child.proc.returncode is None
    reasons = {
        name: snapshots(group, room_id)[0].get("enrichment_reason")
        for name, room_id in room_of.items()
    }
    unusable = {"data_list", "data_null", "data_string", "body_list", "room_id_other"}
    unusable.add("room_id_number")
    assert {n for n, r in reasons.items() if r} == unusable
    assert set(reasons.values()) == {None, "rest_invalid_body"}
    metrics = await proxy.metrics()
    assert metrics['enricher_rest_requests_total{outcome="invalid_body"}'] >= len(
        unusable
    )  # retried
    assert metrics['enricher_payload_fields_defaulted_total{event="rest_room"}'] >= 10
