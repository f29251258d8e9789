"""The join, scenario by scenario: what a browser's sidebar shows afterwards."""

from __future__ import annotations

from datetime import timedelta

from enricher.join import Join
from enricher.join_types import Emit, Fetch, JoinLimits, NewRoomMode, Note, RestFailure
from enricher.payloads import parse_rest_room

from .world import Backend, Browser, truth


def rest(backend: Backend, room_id: str, shape: str = "flat"):  # type: ignore[no-untyped-def]
    return parse_rest_room(backend.rooms[room_id].rest_body(shape), room_id)


def emitted(actions: list, event: str) -> list:  # type: ignore[type-arg]
    return [a.args[0] for a in actions if isinstance(a, Emit) and a.event == event]


def setup(lead: str | None = "Budi Santoso") -> tuple[Backend, Join, Browser]:
    backend = Backend()
    backend.add_room("r1", "6287879565390", lead)
    return backend, Join(), Browser()


def test_new_customer_rest_answers_before_the_first_message_is_saved() -> None:
    """Seed Test Scenario 1: the room appears with name, last message and unread 1."""
    backend, join, browser = setup()
    room = backend.rooms["r1"]
    actions = join.upstream_event("new_room", (room.new_room_payload(),), now=0.0)
    assert Fetch("r1") in actions
    assert emitted(actions, "new_room_complete") == []
    browser.apply(actions)
    browser.apply(join.rest_answer("r1", rest(backend, "r1"), now=0.01))
    message = backend.save_message("r1", "Hello from customer")
    actions = join.upstream_event("new_message", (message,), now=0.02)
    browser.apply(actions)
    # the message is forwarded at once, the snapshot counts it
    assert [a.event for a in actions if isinstance(a, Emit)] == [
        "new_message",
        "new_room_complete",
        "new_room",
    ]
    for style in ("modern", "legacy"):
        assert browser.sidebar(style) == {"r1": [truth(room)]}
    snapshot = browser.snapshots[0]
    assert snapshot["enrichment"] == "complete"
    assert snapshot["leads_info"]["loan_type"] == "personal_loan"
    assert snapshot["last_message"]["id"] == message["id"]
    assert snapshot["last_message_text"] == "Hello from customer"
    assert snapshot["unread_count"] == 1 and snapshot["message_count"] == 1


def test_existing_customer_writes_again_then_an_agent_replies() -> None:
    """Seed Test Scenario 2: later messages are deltas on the snapshot."""
    backend, join, browser = setup()
    room = backend.rooms["r1"]
    browser.apply(join.upstream_event("new_room", (room.new_room_payload(),), now=0.0))
    first = backend.save_message("r1", "Hi")
    browser.apply(join.upstream_event("new_message", (first,), now=0.01))
    browser.apply(join.rest_answer("r1", rest(backend, "r1", "nested"), now=0.02))
    second = backend.save_message("r1", "Still there?")
    reply = backend.save_message("r1", "Yes, how can I help?", user_id="agent-1")
    for message in (second, reply):
        actions = join.upstream_event("new_message", (message,), now=1.0)
        assert emitted(actions, "new_message") == [message]
        browser.apply(actions)
    assert len(browser.snapshots) == 1
    for style in ("modern", "legacy"):
        assert browser.sidebar(style) == {"r1": [truth(room)]}


def test_rest_already_shows_a_message_whose_event_is_still_on_the_way() -> None:
    backend, join, browser = setup()
    room = backend.rooms["r1"]
    browser.apply(join.upstream_event("new_room", (room.new_room_payload(),), now=0.0))
    first = backend.save_message("r1", "one")
    second = backend.save_message("r1", "two")
    actions = join.rest_answer("r1", rest(backend, "r1", "nested"), now=0.05)
    assert emitted(actions, "new_room_complete")[0]["unread_count"] == 2
    browser.apply(actions)
    for message in (first, second, first):
        actions = join.upstream_event("new_message", (message,), now=0.1)
        assert emitted(actions, "new_message") == []
        browser.apply(actions)
    third = backend.save_message("r1", "three")
    browser.apply(join.upstream_event("new_message", (third,), now=0.2))
    assert browser.sidebar("modern") == {"r1": [truth(room)]}


def test_message_before_room() -> None:
    backend, join, browser = setup()
    room = backend.rooms["r1"]
    message = backend.save_message("r1", "first!")
    actions = join.upstream_event("new_message", (message,), now=0.0)
    assert emitted(actions, "new_message") == [message]
    browser.apply(actions)
    browser.apply(join.upstream_event("new_room", (room.new_room_payload(),), now=0.01))
    browser.apply(join.rest_answer("r1", rest(backend, "r1"), now=0.02))
    assert browser.sidebar("modern") == {"r1": [truth(room)]}
    assert browser.sidebar("legacy") == {"r1": [truth(room)]}


def test_duplicates_reach_browsers_once() -> None:
    backend, join, browser = setup()
    room = backend.rooms["r1"]
    for _ in range(2):
        browser.apply(join.upstream_event("new_room", (room.new_room_payload(),), now=0.0))
    message = backend.save_message("r1", "hello")
    for _ in range(2):
        browser.apply(join.upstream_event("new_message", (message,), now=0.01))
    browser.apply(join.rest_answer("r1", rest(backend, "r1"), now=0.02))
    browser.apply(join.upstream_event("new_room", (room.new_room_payload(),), now=0.03))
    browser.apply(join.upstream_event("new_message", (message,), now=0.04))
    assert browser.sidebar("modern") == {"r1": [truth(room)]}
    assert browser.deliveries == {("new_message", message["id"]): 1}


def test_missed_first_message_is_taken_from_rest() -> None:
    backend, join, browser = setup()
    room = backend.rooms["r1"]
    browser.apply(join.upstream_event("new_room", (room.new_room_payload(),), now=0.0))
    backend.save_message("r1", "lost on the way")
    browser.apply(join.rest_answer("r1", rest(backend, "r1", "nested"), now=0.01))
    assert browser.sidebar("modern") == {"r1": [truth(room)]}


def test_flat_rest_waits_briefly_for_the_event_that_has_the_message_id() -> None:
    backend, join, browser = setup()
    room = backend.rooms["r1"]
    browser.apply(join.upstream_event("new_room", (room.new_room_payload(),), now=0.0))
    message = backend.save_message("r1", "hello", user_id=None)
    assert join.rest_answer("r1", rest(backend, "r1", "flat"), now=0.01) == []
    actions = join.upstream_event("new_message", (message,), now=0.02)
    browser.apply(actions)
    (snapshot,) = browser.snapshots
    assert snapshot["last_message"]["id"] == message["id"]
    assert browser.sidebar("modern") == {"r1": [truth(room)]}
    # without the event, the grace ends and the snapshot goes out complete, without the id
    backend, join, browser = setup()
    browser.apply(join.upstream_event("new_room", (backend.rooms["r1"].new_room_payload(),), 0.0))
    backend.save_message("r1", "event lost")
    assert join.rest_answer("r1", rest(backend, "r1", "flat"), now=0.01) == []
    assert join.tick(0.2) == []
    browser.apply(join.tick(0.22))
    (snapshot,) = browser.snapshots
    assert snapshot["enrichment"] == "complete" and snapshot["last_message"]["id"] is None
    assert browser.sidebar("modern") == {"r1": [truth(backend.rooms["r1"])]}


def test_missed_first_message_saved_after_rest_answered_is_fetched_again() -> None:
    backend, join, browser = setup()
    room = backend.rooms["r1"]
    browser.apply(join.upstream_event("new_room", (room.new_room_payload(),), now=0.0))
    assert join.rest_answer("r1", rest(backend, "r1"), now=0.01) == []
    backend.save_message("r1", "its event never comes")
    wakeup = join.next_wakeup()
    assert wakeup is not None and wakeup < 3.0
    assert Fetch("r1") in join.tick(wakeup)
    browser.apply(join.rest_answer("r1", rest(backend, "r1", "nested"), now=wakeup + 0.01))
    assert browser.sidebar("modern") == {"r1": [truth(room)]}
    assert browser.snapshots[0]["enrichment"] == "complete"


def test_failing_rest_gives_a_partial_snapshot_at_the_deadline() -> None:
    backend, join, browser = setup()
    room = backend.rooms["r1"]
    browser.apply(join.upstream_event("new_room", (room.new_room_payload(),), now=0.0))
    assert join.rest_answer("r1", RestFailure("rest_status_5xx"), now=0.1) != []
    message = backend.save_message("r1", "hello")
    browser.apply(join.upstream_event("new_message", (message,), now=0.2))
    assert browser.snapshots == []
    assert join.tick(0.35) == [Fetch("r1")]  # retried after retry_delay
    join.rest_answer("r1", RestFailure("rest_status_5xx"), now=0.4)
    assert browser.snapshots == []
    browser.apply(join.tick(3.0))
    (snapshot,) = browser.snapshots
    assert snapshot["enrichment"] == "partial"
    assert snapshot["enrichment_reason"] == "rest_status_5xx"
    # what it knows is right: the lead from new_room, the forwarded message counted
    assert browser.sidebar("modern") == {"r1": [truth(room)]}


def test_rest_that_never_answers_and_no_lead() -> None:
    backend, join, browser = setup(lead=None)
    room = backend.rooms["r1"]
    browser.apply(join.upstream_event("new_room", (room.new_room_payload(),), now=0.0))
    browser.apply(join.tick(3.0))
    (snapshot,) = browser.snapshots
    assert snapshot["enrichment_reason"] == "rest_pending"
    assert snapshot["room_title"] == "Customer 6287879565390"
    assert snapshot["leads_info"] is None and snapshot["last_message"] is None
    message = backend.save_message("r1", "late but here")
    browser.apply(join.upstream_event("new_message", (message,), now=3.5))
    assert browser.sidebar("modern") == {"r1": [truth(room)]}
    # a REST answer after the snapshot changes nothing
    assert [
        a for a in join.rest_answer("r1", rest(backend, "r1"), 4.0) if isinstance(a, Emit)
    ] == []


def test_rooms_older_than_the_proxy_pass_through_without_snapshot() -> None:
    backend, join, _ = setup()
    message = backend.save_message("r1", "returning customer")
    actions = join.upstream_event("new_message", (message,), now=0.0)
    assert [a for a in actions if isinstance(a, Emit)] == [Emit("new_message", (message,))]
    assert join.tick(100.0) == []
    assert join.pending_rooms == {}


def test_new_room_modes() -> None:
    backend = Backend()
    room = backend.add_room("r1", "62811", "Siti")
    payload = room.new_room_payload()
    raw = Join(new_room_mode=NewRoomMode.RAW)
    assert emitted(raw.upstream_event("new_room", (payload,), 0.0), "new_room") == [payload]
    dropped = Join(new_room_mode=NewRoomMode.DROP)
    dropped.upstream_event("new_room", (payload,), 0.0)
    actions = dropped.tick(10.0)
    assert emitted(actions, "new_room") == [] and len(emitted(actions, "new_room_complete")) == 1


def test_room_messages_go_to_the_local_room_once() -> None:
    backend, join, _ = setup()
    message = backend.save_message("r1", "hi")
    actions = join.upstream_event("room:new_message", (message,), 0.0)
    assert [a for a in actions if isinstance(a, Emit)] == [
        Emit("room:new_message", (message,), room="room:r1")
    ]
    assert [
        a for a in join.upstream_event("room:new_message", (message,), 0.1) if isinstance(a, Emit)
    ] == []


def test_other_events_pass_through_unchanged() -> None:
    join = Join()
    args = ({"a": 1}, "x", [1, 2])
    assert join.upstream_event("user_typing", args, 0.0) == [Emit("user_typing", args)]
    assert join.upstream_event("ping", (), 0.0) == [Emit("ping", ())]


def test_unusable_payloads_are_forwarded_and_noted() -> None:
    join = Join()
    for event, payload in [
        ("new_message", "not an object"),
        ("new_message", {"id": "m1"}),
        ("new_room", {"room_id": {"nested": True}}),
        ("room:new_message", None),
    ]:
        actions = join.upstream_event(event, (payload,), 0.0)
        kinds = [a.kind for a in actions if not isinstance(a, Emit | Fetch)]
        assert "payload_rejected" in kinds
        assert [a.event for a in actions if isinstance(a, Emit)] == [event]


def test_held_rooms_are_bounded() -> None:
    join = Join(limits=JoinLimits(max_pending_rooms=2))
    backend = Backend()
    sent = []
    for i in range(5):
        room = backend.add_room(f"r{i}", f"628{i}", None)
        sent += emitted(
            join.upstream_event("new_room", (room.new_room_payload(),), 0.0), "new_room_complete"
        )
    assert len(join.pending_rooms) == 2
    assert [s["enrichment_reason"] for s in sent] == ["capacity"] * 3
    assert len(emitted(join.flush(0.1, "shutdown"), "new_room_complete")) == 2


def test_a_busy_room_older_than_the_proxy_keeps_only_its_recent_messages() -> None:
    """Messages of rooms without a snapshot are kept early_message_ttl in case their
    new_room is late; a room that is simply older than the proxy must not pile them up."""
    limits = JoinLimits(early_message_ttl=30.0)
    join = Join(limits=limits)
    backend = Backend()
    backend.add_room("r1", "6281", None)
    for second in range(600):  # 10 minutes, one message a second
        join.upstream_event("new_message", (backend.save_message("r1", f"m{second}"),), second)
        assert len(join.early_messages["r1"]) <= 30
    held = join.upstream_event("new_room", (backend.rooms["r1"].new_room_payload(),), 600.0)
    notes = [a for a in held if not isinstance(a, (Emit, Fetch))]
    assert notes[-1].fields["early_messages"] == 29  # those of the last 30 s: 571 .. 599


def test_rest_retries_back_off_with_jitter_within_the_deadline() -> None:
    """Each retry waits between half and all of its doubling delay, as jitter() says."""
    backend, _, _ = setup()
    room = backend.rooms["r1"]
    limits = JoinLimits(retry_delay=0.4, hold_timeout=3.0)
    for jitter, expected in ((0.0, [0.2, 0.4, 0.8]), (1.0, [0.4, 0.8, 1.6])):
        join = Join(limits=limits, jitter=lambda j=jitter: j)
        join.upstream_event("new_room", (room.new_room_payload(),), now=0.0)
        now, waits = 0.0, []
        for _ in range(3):
            join.rest_answer("r1", RestFailure("rest_connection"), now=now)
            wakeup = join.next_wakeup()
            assert wakeup is not None
            waits.append(round(wakeup - now, 6))
            now = wakeup
            assert Fetch("r1") in join.tick(now)
        assert waits == expected


# -- a new_room lost while the backend connection was down ---------------------------------


def lost_room(backend: Backend, join: Join) -> dict:  # type: ignore[type-arg]
    """r1 is created while the connection is down; the first message after it is back."""
    join.upstream_lost(backend.moment(), now=0.0)
    backend.create_room("r1")
    backend.save_message("r1", "Halo, ada orang?")  # emitted while down: gone
    join.upstream_restored(backend.moment(), now=1.0)
    return backend.save_message("r1", "Halo?")


def test_a_room_created_during_an_outage_is_recovered_from_rest() -> None:
    backend, join, browser = setup()
    message = lost_room(backend, join)
    actions = join.upstream_event("new_message", (message,), now=1.1)
    browser.apply(actions)
    assert [a.event for a in actions if isinstance(a, Emit)] == ["new_message"]  # at once
    assert Fetch("r1") in actions
    actions = join.rest_answer("r1", rest(backend, "r1", "nested"), now=1.2)
    browser.apply(actions)
    assert any(isinstance(a, Note) and a.kind == "room_recovered" for a in actions), actions
    # both messages counted, the one forwarded before the snapshot included
    for style in ("modern", "legacy"):
        assert browser.sidebar(style) == {"r1": [truth(backend.rooms["r1"])]}
    assert browser.snapshots[0]["enrichment"] == "complete"

    # The real new_room after all, and the message again: nothing new for browsers.
    late = join.upstream_event("new_room", (backend.rooms["r1"].new_room_payload(),), now=1.3)
    again = join.upstream_event("new_message", (message,), now=1.4)
    assert [a for a in late + again if isinstance(a, Emit)] == []
    later = backend.save_message("r1", "Masih di sana?")
    browser.apply(join.upstream_event("new_message", (later,), now=1.5))
    assert browser.sidebar("modern") == {"r1": [truth(backend.rooms["r1"])]}
    assert len(browser.snapshots) == 1


def test_in_raw_mode_a_recovered_room_goes_out_as_new_room_too() -> None:
    backend = Backend()
    backend.add_room("r1", "6287879565390", "Budi Santoso")
    join, browser = Join(new_room_mode=NewRoomMode.RAW), Browser()
    message = lost_room(backend, join)
    browser.apply(join.upstream_event("new_message", (message,), now=1.1))
    browser.apply(join.rest_answer("r1", rest(backend, "r1", "nested"), now=1.2))
    assert browser.sidebar("legacy") == {"r1": [truth(backend.rooms["r1"])]}


def test_a_room_older_than_the_outage_is_asked_about_once() -> None:
    backend, join, _ = setup()
    backend.create_room("r1")  # before the outage, and before enricher saw anything
    join.upstream_lost(backend.moment() + timedelta(seconds=5), now=10.0)
    join.upstream_restored(backend.moment() + timedelta(seconds=6), now=11.0)
    first = backend.save_message("r1", "Saya pelanggan lama")
    actions = join.upstream_event("new_message", (first,), now=11.1)
    assert Fetch("r1") in actions
    actions = join.rest_answer("r1", rest(backend, "r1"), now=11.2)
    assert [a for a in actions if isinstance(a, Emit)] == []
    assert [a.fields["outcome"] for a in actions if isinstance(a, Note)] == ["old"]
    second = backend.save_message("r1", "Halo lagi")
    actions = join.upstream_event("new_message", (second,), now=11.3)
    assert [a.event for a in actions if isinstance(a, (Emit, Fetch))] == ["new_message"]
    assert join.sizes()["rooms_checked"] == 1


def test_without_an_outage_an_unknown_room_waits_for_its_new_room() -> None:
    backend, join, browser = setup()
    backend.create_room("r1")
    message = backend.save_message("r1", "Hi")
    actions = join.upstream_event("new_message", (message,), now=0.0)
    assert [a for a in actions if isinstance(a, Fetch)] == []
    browser.apply(actions)
    browser.apply(join.upstream_event("new_room", (backend.rooms["r1"].new_room_payload(),), 0.1))
    browser.apply(join.rest_answer("r1", rest(backend, "r1"), now=0.2))
    assert browser.sidebar("modern") == {"r1": [truth(backend.rooms["r1"])]}


def test_a_check_rest_cannot_answer_gives_no_snapshot_and_is_asked_again() -> None:
    backend, join, browser = setup()
    message = lost_room(backend, join)
    browser.apply(join.upstream_event("new_message", (message,), now=1.1))
    browser.apply(join.rest_answer("r1", RestFailure("rest_timeout"), now=1.2))
    browser.apply(join.tick(10.0))  # past hold_timeout: no partial guess for a room that may be old
    assert browser.snapshots == []
    again = backend.save_message("r1", "Tolong dibalas")
    actions = join.upstream_event("new_message", (again,), now=10.1)
    assert Fetch("r1") in actions
    browser.apply(actions)
    browser.apply(join.rest_answer("r1", rest(backend, "r1", "nested"), now=10.2))
    assert browser.sidebar("modern") == {"r1": [truth(backend.rooms["r1"])]}


def test_at_shutdown_a_room_still_being_checked_gets_no_guessed_snapshot() -> None:
    backend, join, browser = setup()
    message = lost_room(backend, join)
    browser.apply(join.upstream_event("new_message", (message,), now=1.1))
    actions = join.flush(1.2, "shutdown")
    assert [a for a in actions if isinstance(a, Emit)] == []
    assert [a.fields["outcome"] for a in actions if isinstance(a, Note)] == ["shutdown"]
    assert join.sizes()["pending_rooms"] == 0


def test_rest_with_a_last_message_of_the_wrong_type_never_counts_a_message_twice() -> None:
    """REST counts the first message but its ``last_message`` is unusable: the forwarded
    message may be the one counted, so it is not added on top."""
    backend, join, browser = setup()
    room = backend.rooms["r1"]
    browser.apply(join.upstream_event("new_room", (room.new_room_payload(),), now=0.0))
    message = backend.save_message("r1", "Hi")
    browser.apply(join.upstream_event("new_message", (message,), now=0.01))
    body = room.rest_body("nested")
    body["data"]["last_message"] = 42
    parsed = parse_rest_room(body, "r1")
    assert parsed.value.last_message is None and "last_message" in parsed.warnings
    browser.apply(join.rest_answer("r1", parsed, now=0.02))
    (snapshot,) = browser.snapshots
    assert snapshot["unread_count"] == 1 and snapshot["message_count"] == 1
    assert snapshot["last_message"]["id"] == message["id"]
    for style in ("modern", "legacy"):
        assert browser.sidebar(style) == {"r1": [truth(room)]}
