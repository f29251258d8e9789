"""The Node harness on its own: browsers.js straight against backend.js, no enricher.

These prove the stub emits what the seed's backend emits (and what each fault knob
promises), and that the browsers' sidebars and the checks see the seed's bugs, so that a
failing e2e test points at the proxy rather than at the harness.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from .conftest import Backend, BrowsersFactory, barrier, sidebar_check

pytestmark = pytest.mark.e2e

ROOM_EVENTS = ("new_room", "new_message")


def sequence(group, browser: int, room_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        e["event"]
        for e in group.events()
        if e["browser"] == browser and e["event"] in ROOM_EVENTS and e.get("room_id") == room_id
    ]


async def test_new_customer_is_what_the_seed_describes(
    backend: Backend, browsers: BrowsersFactory
) -> None:
    group = await browsers(backend.url, 3, context=[backend.child])
    sent = await backend.customer("6281100000001", "Budi Santoso", "halo kak")
    assert sent["new_room"] is True
    await barrier(backend, group)

    for i in range(3):
        assert sequence(group, i, sent["room_id"]) == ["new_room", "new_message"]
    new_room = group.events("new_room")[0]["payload"]
    assert new_room == {
        "room_id": sent["room_id"],
        "room_phone": "6281100000001",
        "room_title": "Personal",
        "room_created_at": new_room["room_created_at"],
        "room_updated_at": new_room["room_updated_at"],
        "leads_info": {
            "id": new_room["leads_info"]["id"],
            "phone": "6281100000001",
            "name": "Budi Santoso",
        },
        "unread_count": 0,
        "last_message": None,
        "participants": [],
    }
    message = group.events("new_message")[0]["payload"]
    assert message["id"] == sent["message_id"] and message["user_id"] is None
    assert message["content_text"] == "halo kak" and message["status"] == "sent"
    assert message["created_at"] > new_room["room_created_at"]

    rest = await backend.room(sent["room_id"])
    assert rest["leads_info"]["outstanding"] == 50000000
    assert (rest["last_message_text"], rest["unread_count"], rest["message_count"]) == (
        "halo kak",
        1,
        1,
    )

    # room_first with a named lead: the legacy handlers happen to get it right...
    dump = await group.dump()
    await sidebar_check(backend, dump, sidebars=("legacy",))
    # ...and with no new_room_complete the modern sidebar has nothing: the check sees it.
    with pytest.raises(pytest.fail.Exception, match="0 entries, want 1"):
        await sidebar_check(backend, dump, sidebars=("modern",))


async def test_the_checks_see_the_seeds_bugs(backend: Backend, browsers: BrowsersFactory) -> None:
    group = await browsers(backend.url, 2, context=[backend.child])
    no_lead = await backend.customer("6281100000002", None, "tanpa lead")
    early = await backend.customer("6281100000003", "Siti", "pesan duluan", order="message_first")
    twice = await backend.customer("6281100000004", "Andi", "dua kali", duplicate_message=True)
    await barrier(backend, group)
    dump = await group.dump()

    with pytest.raises(pytest.fail.Exception) as failed:
        await sidebar_check(backend, dump, sidebars=("legacy",))
    report = str(failed.value)
    assert f"room {no_lead['room_id']} (6281100000002) legacy: name 'Personal'" in report
    assert f"room {early['room_id']} (6281100000003) legacy: last message (None, None)" in report
    assert f"room {early['room_id']} (6281100000003) legacy: unread_count 0, REST says 1" in report
    assert f"room {twice['room_id']} (6281100000004) legacy: unread_count 2, REST says 1" in report
    assert f"new_message id {twice['message_id']} received 2 times" in report
    assert "[browsers 0-1]" in report


@pytest.mark.parametrize(
    ("knobs", "expected"),
    [
        ({}, ["new_room", "new_message"]),
        ({"order": "message_first"}, ["new_message", "new_room"]),
        ({"duplicate_room": True}, ["new_room", "new_room", "new_message"]),
        ({"duplicate_message": True}, ["new_room", "new_message", "new_message"]),
        ({"drop_message_event": True}, ["new_room"]),
        ({"drop_room_event": True}, ["new_message"]),
        (
            {"order": "message_first", "duplicate_room": True},
            ["new_message", "new_room", "new_room"],
        ),
    ],
    ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else None,
)
async def test_emission_knobs(
    backend: Backend, browsers: BrowsersFactory, knobs: dict[str, object], expected: list[str]
) -> None:
    group = await browsers(backend.url, 1, context=[backend.child])
    sent = await backend.customer("6281100000010", "Dewi", "knob", **knobs)
    await barrier(backend, group)
    assert sequence(group, 0, sent["room_id"]) == expected
    # The data is saved whatever was emitted.
    assert (await backend.room(sent["room_id"]))["last_message_text"] == "knob"

    again = await backend.customer("6281100000010", "Dewi", "lagi")
    assert again["new_room"] is False and again["room_id"] == sent["room_id"]
    await barrier(backend, group)
    assert sequence(group, 0, sent["room_id"]) == [*expected, "new_message"]


async def test_delayed_message_event_is_in_rest_first(
    backend: Backend, browsers: BrowsersFactory
) -> None:
    group = await browsers(backend.url, 1, context=[backend.child])
    webhook = asyncio.create_task(
        backend.customer("6281100000020", "Rina", "lambat", message_event_delay_ms=300)
    )
    await group.wait_all("new_room")
    room_id = group.events("new_room")[0]["id"]
    rest = await backend.room(room_id)
    assert (rest["last_message_text"], rest["unread_count"]) == ("lambat", 1)
    assert group.events("new_message") == [], "the message event came before its delay"
    sent = await webhook  # answered only after the delayed emit
    await group.wait_all("new_message", sent["message_id"])


async def test_room_gap_lets_rest_see_the_room_without_its_message(
    backend: Backend, browsers: BrowsersFactory
) -> None:
    group = await browsers(backend.url, 1, context=[backend.child])
    webhook = asyncio.create_task(
        backend.customer("6281100000021", "Tono", "nanti", room_gap_ms=300)
    )
    await group.wait_all("new_room")
    room_id = group.events("new_room")[0]["id"]
    rest = await backend.room(room_id)
    assert (rest["last_message_text"], rest["unread_count"]) == (None, 0)
    await webhook
    rest = await backend.room(room_id)
    assert (rest["last_message_text"], rest["unread_count"]) == ("nanti", 1)


async def test_rest_knobs(backend: Backend) -> None:
    session, url = backend.session, backend.url

    async def get(room_id: str) -> tuple[int, str]:
        async with session.get(f"{url}/rooms/{room_id}") as resp:
            return resp.status, await resp.text()

    flat = (await backend.customer("6281100000030", "Flat", "f1"))["room_id"]
    nested = (await backend.customer("6281100000031", "Nest", "n1", rest_shape="nested"))["room_id"]
    broken = (await backend.customer("6281100000032", "Err", "e1", rest_fail="500"))["room_id"]
    garbage = (await backend.customer("6281100000033", "Garb", "g1", rest_fail="garbage"))[
        "room_id"
    ]
    hang = (await backend.customer("6281100000034", "Hang", "h1", rest_fail="hang"))["room_id"]
    slow = (await backend.customer("6281100000035", "Slow", "s1", rest_delay_ms=500))["room_id"]
    await backend.agent_reply(nested, "n2 from agent")

    status, text = await get(flat)
    assert status == 200 and '"last_message_text":"f1"' in text and '"last_message":' not in text
    status, text = await get(nested)
    assert status == 200 and '"last_message_text"' not in text
    data = await backend.room(nested)
    assert data["last_message"]["content_text"] == "n2 from agent"
    assert data["last_message"]["user_id"] is not None
    assert (data["unread_count"], data["message_count"]) == (2, 2)
    assert (await get(broken))[0] == 500
    assert await get(garbage) == (200, "not json{")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await get(hang)
    began = time.monotonic()
    assert (await get(slow))[0] == 200
    assert time.monotonic() - began >= 0.45
    assert (await get("no-such-room"))[0] == 404

    # Global knobs apply to rooms without their own.
    await backend.config(rest_fail="500")
    assert (await get(flat))[0] == 500
    assert (await get(nested))[0] == 500
    await backend.config(rest_fail=None, rest_shape="nested")
    status, text = await get(flat)
    assert status == 200 and '"last_message":{' in text

    assert await backend.rest_calls() == {
        flat: 3,
        nested: 2,
        broken: 1,
        garbage: 1,
        hang: 1,
        slow: 1,
        "no-such-room": 1,
    }


async def test_client_events_acks_and_rooms(backend: Backend, browsers: BrowsersFactory) -> None:
    group = await browsers(backend.url, 4, context=[backend.child])
    room_id = (await backend.customer("6281100000040", "Joko", "join me"))["room_id"]

    assert (await group.emit(0, "echo", {"x": 1}))["args"] == [{"x": 1}]
    assert (await group.emit(1, "echo", 1, "two", [3]))["args"] == [1, "two", [3]]
    for browser in (0, 1):
        ack = await group.emit(browser, "room:join", {"room_id": room_id})
        assert ack["args"] == [{"ok": True, "room_id": room_id}]
    assert await backend.joined(room_id) == 2

    reply = await backend.agent_reply(room_id, "halo dari agent")
    await group.wait_all("new_message", reply)
    await barrier(backend, group)
    assert group.who_got("room:new_message", reply) == {0, 1}

    await group.emit(0, "room:leave", {"room_id": room_id}, ack=False)

    await backend.child.wait_for(
        lambda item: item.get("event") == "room:leave" and item.get("count") == 1,
        "the backend to log 1 socket left in the room",
    )
    assert (await group.emit(1, "room:leave", {"room_id": room_id}))["args"][0]["ok"] is True
    assert await backend.joined(room_id) == 0

    await backend.emit("some:event", {"a": 1}, "x")
    await group.wait_all("some:event", args=[{"a": 1}, "x"])

    recorded = [(e["event"], e["args"], e["has_ack"]) for e in await backend.client_events()]
    assert recorded == [
        ("echo", [{"x": 1}], True),
        ("echo", [1, "two", [3]], True),
        ("room:join", [{"room_id": room_id}], True),
        ("room:join", [{"room_id": room_id}], True),
        ("room:leave", [{"room_id": room_id}], False),
        ("room:leave", [{"room_id": room_id}], True),
    ]
    dump = await group.dump()
    assert [b["other"] for b in dump][3][-1] == {"event": "some:event", "args": [{"a": 1}, "x"]}


async def test_kick_and_wait_connections(backend: Backend, browsers: BrowsersFactory) -> None:
    first = await browsers(backend.url, 2, context=[backend.child])
    assert await backend.wait_connections(2) == 2
    waiting = asyncio.create_task(backend.wait_connections(3))
    assert await backend.kick() == 2
    await first.wait_until(
        lambda: (
            {e["browser"] for e in first.child.items if e.get("type") == "disconnected"} == {0, 1}
        ),
        "both browsers disconnected by the server",
    )
    assert not waiting.done()
    await browsers(backend.url, 1, context=[backend.child])
    assert await waiting == 3
    # socket.io clients do not come back by themselves after a server-side disconnect.
    assert len(first.connected_lines()) == 2
