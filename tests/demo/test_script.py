"""The simulated backend's script and store: pure, seeded, in the seed's shapes."""

from __future__ import annotations

import random
from typing import Any

from enricher.demo.script import AddRoom, Pause, Save, Script, Send, Visit
from enricher.demo.store import Store, StoredRoom, rest_room

NOW = 1_762_079_400.0  # 2025-11-02T10:30:00Z


def _events(visit: Visit) -> list[str]:
    return [step.event for step in visit.steps if isinstance(step, Send)]


def _kinds(visit: Visit) -> list[str]:
    return [type(step).__name__ for step in visit.steps]


def _visits(seed: int, n: int, *, chaos: bool = True) -> list[Visit]:
    script = Script(random.Random(seed), chaos=chaos)
    return [script.next_visit(NOW + i * 0.2) for i in range(n)]


def test_a_new_customer_without_chaos_is_new_room_then_the_message() -> None:
    visit = _visits(1, 1, chaos=False)[0]
    assert visit.kind == "new_customer"
    assert _kinds(visit) == ["AddRoom", "Send", "Pause", "Save", "Send", "Send"]
    assert _events(visit) == ["new_room", "room:new_message", "new_message"]
    new_room = next(s.payload for s in visit.steps if isinstance(s, Send))
    assert new_room["room_title"] == "Personal"
    assert new_room["last_message"] is None and new_room["unread_count"] == 0
    assert new_room["leads_info"] is None or set(new_room["leads_info"]) == {"id", "phone", "name"}
    joined = [s.to for s in visit.steps if isinstance(s, Send) and s.event == "room:new_message"]
    assert joined == [f"room:{visit.room_id}"]


def test_later_visits_send_only_the_message_events() -> None:
    for visit in _visits(2, 60):
        if visit.kind != "new_customer":
            assert set(_events(visit)) <= {"room:new_message", "new_message"}
            assert not any(isinstance(s, AddRoom) for s in visit.steps)


def test_about_half_the_visits_are_new_customers_with_some_agent_replies() -> None:
    kinds = [visit.kind for visit in _visits(3, 400)]
    assert 160 < kinds.count("new_customer") < 240
    assert kinds.count("agent_reply") > 20


def test_the_same_seed_gives_the_same_customers() -> None:
    assert _visits(7, 30) == _visits(7, 30)
    assert _visits(7, 30) != _visits(8, 30)


def test_chaos_orders_duplicates_and_loses_events() -> None:
    visits = [v for v in _visits(4, 400) if v.kind == "new_customer"]
    orders = {tuple(dict.fromkeys(_events(v))) for v in visits}
    assert ("room:new_message", "new_message", "new_room") in orders  # message before room
    assert ("new_room",) in orders  # the first message lost
    assert any(_events(v).count("new_room") == 2 for v in visits)  # duplicates
    assert all(any(isinstance(s, Save) for s in v.steps) for v in visits)  # always saved


def test_no_chaos_no_disorder() -> None:
    for visit in _visits(5, 200, chaos=False):
        if visit.kind == "new_customer":
            assert _events(visit) == ["new_room", "room:new_message", "new_message"]
            room = next(s.room for s in visit.steps if isinstance(s, AddRoom))
            assert room.rest_chaos is None


def _carry_out(store: Store, visits: list[Visit]) -> list[dict[str, Any]]:
    sent = []
    for visit in visits:
        for step in visit.steps:
            if isinstance(step, AddRoom):
                store.add_room(step.room)
            elif isinstance(step, Save):
                store.save(step.message)
            elif isinstance(step, Send):
                sent.append(step.payload)
            else:
                assert isinstance(step, Pause)
    return sent


def test_rest_tells_the_truth_the_events_leave_out() -> None:
    store = Store()
    visits = _visits(6, 200)
    _carry_out(store, visits)
    listing = store.listing()
    assert listing["last_seq"] == len(store.rooms) == len(listing["data"])
    for room in store.rooms.values():
        body = rest_room(room)
        lead = body["leads_info"]
        assert set(lead) == {
            "id", "name", "phone", "outstanding", "loan_type", "leads_status", "contact_status"
        }  # fmt: skip
        assert lead["name"] not in ("Personal", "Unknown") and lead["phone"] == room.phone
        assert body["unread_count"] == body["message_count"] == len(room.messages) >= 1
        last = room.messages[-1]
        if room.rest_shape != "flat":
            assert body["last_message"]["id"] == last["id"]
        if room.rest_shape != "nested":
            assert body["last_message_text"] == last["content_text"]
            assert body["last_message_timestamp"] == last["created_at"]
        times = [m["created_at"] for m in room.messages]
        assert times == sorted(times) and len(set(times)) == len(times)
    assert {room.rest_shape for room in store.rooms.values()} == {"flat", "nested", "both"}


def _room(chaos: Any) -> StoredRoom:
    lead = {"id": "l1", "name": "Budi Santoso", "phone": "628123456789"}
    return StoredRoom("r1", "628123456789", lead, "2025-11-02T10:30:00.000Z", rest_chaos=chaos)


def test_failing_rest_fails_once_then_answers() -> None:
    store = Store()
    store.add_room(_room("flaky"))
    assert store.answer("r1").status == 500
    assert store.answer("r1").status == 200


def test_slow_rest_is_slow_once() -> None:
    store = Store()
    room = _room("slow")
    room.rest_delay = 0.5
    store.add_room(room)
    assert store.answer("r1").delay == 0.5
    assert store.answer("r1").delay == 0.0


def test_unknown_rooms_are_404_and_have_no_messages() -> None:
    store = Store()
    assert store.answer("nope").status == 404
    assert store.messages("nope") == []
