"""Every interleaving hypothesis can think of: sidebars end equal to the REST truth.

The simulated backend saves rooms and messages and emits their events; the steps below
deliver events late, twice or (the first message) never, answer REST fast, slow, failing,
flat or nested, and let time pass. The backend connection can also be lost and come back:
what the backend emits meanwhile is gone, new_rooms included (docs/contract.md: "a new_room can be
missed entirely"). Browsers apply the seed's handlers to the output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enricher.join import Join
from enricher.join_types import Emit, Fetch, JoinLimits, NewRoomMode, Note, RestFailure
from enricher.payloads import parse_rest_room

from .world import Backend, Browser, truth

PLACEHOLDERS = {None, "", "Unknown", "Personal"}


@dataclass
class Plan:
    room_id: str
    messages: int
    lose_first_message: bool
    new_room_has_lead: bool
    saved: int = 0  # 0: room not created; k: room and k-1 messages saved
    lost: set[int] = field(default_factory=set)  # messages (1-based) whose event was lost
    new_room_lost: bool = False


@dataclass
class Run:
    join: Join
    backend: Backend
    browser: Browser
    now: float = 0.0
    in_flight: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)
    fetches: list[str] = field(default_factory=list)
    rest_saw: dict[str, int] = field(default_factory=dict)  # messages REST showed last
    snapshot_rest_saw: dict[str, int] = field(default_factory=dict)
    delivered_ids: set[str] = field(default_factory=set)
    snapshot_delivered: dict[str, set[str]] = field(default_factory=dict)
    connected: bool = True
    outages: int = 0

    def carry_out(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Fetch):
                self.fetches.append(action.room_id)
            if isinstance(action, Emit) and action.event == "new_room_complete":
                room_id = action.args[0]["room_id"]
                self.snapshot_rest_saw[room_id] = self.rest_saw.get(room_id, 0)
                self.snapshot_delivered[room_id] = set(self.delivered_ids)
        self.browser.apply(actions)

    def deliverable(self) -> list[int]:
        """Events that may arrive next: a room's messages arrive in the order they were saved."""
        next_seq: dict[str, int] = {}
        for event, payload, seq in self.in_flight:
            if event == "new_message":
                room_id = payload["room_id"]
                next_seq[room_id] = min(next_seq.get(room_id, seq), seq)
        return [
            i
            for i, (event, payload, seq) in enumerate(self.in_flight)
            if event == "new_room" or seq <= next_seq[payload["room_id"]]
        ]

    def deliver(self, index: int) -> None:
        event, payload, _ = self.in_flight.pop(index)
        if event == "new_message":
            self.delivered_ids.add(payload["id"])
        self.carry_out(self.join.upstream_event(event, (payload,), self.now))

    def answer(self, index: int, outcome: str) -> None:
        room_id = self.fetches.pop(index)
        saw_before = self.rest_saw.get(room_id)
        if outcome == "fail":
            answer: Any = RestFailure("rest_status_5xx")
        else:
            room = self.backend.rooms[room_id]
            if room_id in self.join.pending_rooms:  # an answer the join will use
                self.rest_saw[room_id] = len(room.messages)
            answer = parse_rest_room(room.rest_body(outcome), room_id)
        actions = self.join.rest_answer(room_id, answer, self.now)
        if any(isinstance(a, Note) and a.kind == "room_checked" for a in actions):
            # it answered a check (not a room created in an outage): the room is not held
            # and the answer not used
            if saw_before is None:
                self.rest_saw.pop(room_id, None)
            else:
                self.rest_saw[room_id] = saw_before
        self.carry_out(actions)

    def drain(self) -> None:
        """Every event on the way delivered, then every REST request answered (flat)."""
        while self.in_flight:
            self.deliver(self.deliverable()[0])
        while self.fetches:
            self.answer(0, "flat")

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.carry_out(self.join.tick(self.now))

    def disconnect(self) -> None:
        """The connection is lost. What was emitted before still arrives (late, maybe):
        the last packet heard came after it, on one ordered connection."""
        self.connected = False
        self.outages += 1
        self.carry_out(self.join.upstream_lost(self.backend.moment(), self.now))

    def reconnect(self) -> None:
        # A reconnection takes longer than the backend clock's resolution: no message
        # saved after it has the time of one saved during the outage.
        self.backend.time_passes()
        self.connected = True
        self.carry_out(self.join.upstream_restored(self.backend.moment(), self.now))


def save_next(run: Run, plan: Plan, duplicate: bool, same_moment: bool = False) -> None:
    room = run.backend.rooms[plan.room_id]
    copies = 2 if duplicate else 1
    if plan.saved == 0:
        run.backend.create_room(plan.room_id)
        payload = room.new_room_payload(with_lead=plan.new_room_has_lead)
        if run.connected:
            run.in_flight += [("new_room", payload, 0)] * copies
        else:
            plan.new_room_lost = True
    else:
        message = run.backend.save_message(
            plan.room_id, f"message {plan.saved} of {plan.room_id}", same_moment=same_moment
        )
        if (plan.saved == 1 and plan.lose_first_message) or not run.connected:
            plan.lost.add(plan.saved)
        else:
            run.in_flight += [("new_message", message, plan.saved)] * copies
    plan.saved += 1


plans = st.lists(
    st.builds(
        Plan,
        room_id=st.just(""),
        messages=st.integers(1, 3),
        lose_first_message=st.booleans(),
        new_room_has_lead=st.booleans(),
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plans=plans,
    leads=st.lists(st.sampled_from(["Budi Santoso", "Siti Rahayu", None]), min_size=3, max_size=3),
    mode=st.sampled_from([NewRoomMode.ENRICHED, NewRoomMode.RAW, NewRoomMode.DROP]),
    clock_skew=st.sampled_from([0.0, 2.0]),
    data=st.data(),
)
def test_sidebars_equal_rest_truth_in_any_order(
    plans: list[Plan],
    leads: list[str | None],
    mode: NewRoomMode,
    clock_skew: float,
    data: st.DataObject,
) -> None:
    backend = Backend()
    for i, plan in enumerate(plans):
        plan.room_id = f"room-{i}"
        backend.add_room(plan.room_id, f"62812000{i}", leads[i])
    join = Join(new_room_mode=mode, limits=JoinLimits(clock_skew=clock_skew))
    run = Run(join, backend, Browser())

    for _ in range(data.draw(st.integers(0, 40), label="steps")):
        choices = ["tick", "reconnect" if not run.connected else "disconnect"]
        if run.connected and run.outages >= 2:
            choices.pop()
        if any(p.saved <= p.messages for p in plans):
            choices.append("save")
        if run.in_flight:
            choices.append("deliver")
        if run.fetches:
            choices.append("rest")
        choice = data.draw(st.sampled_from(choices))
        if choice == "save":
            plan = data.draw(st.sampled_from([p for p in plans if p.saved <= p.messages]))
            save_next(
                run,
                plan,
                duplicate=data.draw(st.booleans(), label="duplicate"),
                same_moment=data.draw(st.booleans(), label="same millisecond as the last"),
            )
        elif choice == "deliver":
            run.deliver(data.draw(st.sampled_from(run.deliverable())))
        elif choice == "rest":
            index = data.draw(st.integers(0, len(run.fetches) - 1))
            run.answer(index, data.draw(st.sampled_from(["flat", "nested", "fail"])))
        elif choice == "disconnect":
            run.disconnect()
        elif choice == "reconnect":
            run.reconnect()
        else:
            run.tick(data.draw(st.sampled_from([0.001, 0.1, 0.3, 1.0, 2.5])))

    # The rest of the story: connected again, everything saved, delivered, answered, and
    # time runs out. A room whose new_room was lost gets one more message: enricher only
    # learns of the room from a message that arrives.
    if not run.connected:
        run.reconnect()
    for plan in plans:
        if plan.new_room_lost:
            plan.messages += 1
        while plan.saved <= plan.messages:
            save_next(run, plan, duplicate=False)
    run.drain()
    run.tick(10.0)
    run.drain()  # answers after every deadline change nothing
    # A check REST did not answer in time is asked again at the room's next message.
    for plan in plans:
        if plan.new_room_lost and plan.room_id not in run.snapshot_rest_saw:
            plan.messages += 1
            save_next(run, plan, duplicate=False)
    run.drain()
    run.tick(10.0)

    browser = run.browser
    assert all(count == 1 for count in browser.deliveries.values()), browser.deliveries
    snapshots = {s["room_id"]: s for s in browser.snapshots}
    assert len(browser.snapshots) == len(plans) == len(snapshots)
    styles = ["modern"] if mode is not NewRoomMode.ENRICHED else ["modern", "legacy"]
    legacy = browser.sidebar("legacy")
    for plan in plans:
        # one new_room per room whenever it is sent, for recovered rooms too
        assert len(legacy.get(plan.room_id, [])) == (0 if mode is NewRoomMode.DROP else 1)
        room = backend.rooms[plan.room_id]
        expected = truth(room)
        snapshot = snapshots[plan.room_id]
        for style in styles:
            (entry,) = browser.sidebar(style)[plan.room_id]
            assert entry["name"] not in PLACEHOLDERS
            if any(i > run.snapshot_rest_saw.get(plan.room_id, 0) for i in plan.lost):
                continue  # a message's event was lost and the snapshot's REST did not show it
            if snapshot["enrichment"] == "complete":
                assert entry == expected, (style, snapshot)
                shown = snapshot["last_message"]
                (message,) = [
                    m
                    for m in room.messages
                    if (m["created_at"], m["content_text"])
                    == (shown["created_at"], shown["content_text"])
                ]
                if message["id"] in run.snapshot_delivered[plan.room_id]:
                    # its event had come: the snapshot names it as the event did
                    assert shown["id"] == message["id"] and shown["user_id"] == message["user_id"]
            else:
                # partial: what it did not know (the full lead) may differ, never the counts
                assert {k: entry[k] for k in ("last_text", "last_at", "unread")} == {
                    k: expected[k] for k in ("last_text", "last_at", "unread")
                }, (style, snapshot)
