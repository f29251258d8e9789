"""Connection state recovery's rules: what a returning browser is given, with a clock."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from enricher.recovery import NotRecovered, Recovered, Recovery, SentLog
from enricher.sessions import replay, with_offset

from ..tools import Clock


def offset_of(packet: str) -> str:
    offset: str = json.loads(packet[1:])[-1]
    return offset


def setup(max_events: int = 100) -> tuple[Recovery, Clock]:
    clock = Clock()
    return Recovery(max_disconnection=120.0, max_events=max_events, clock=clock), clock


def test_a_browser_gets_what_it_missed_in_order_once() -> None:
    recovery, clock = setup()
    since = recovery.last
    seen = recovery.stamp('2["new_message",{"id":"m1"}]')
    assert seen == f'2["new_message",{{"id":"m1"}},"{recovery.epoch}.1"]'
    missed = [
        recovery.stamp('2["new_message",{"id":"m2"}]'),
        recovery.stamp('2["room:new_message",{"id":"m2"}]', rooms=["room:r1"]),
    ]
    recovery.stamp('2["room:new_message",{"id":"m9"}]', rooms=["room:r9"])  # not its room
    recovery.stamp('2["typing",{}]', skip=["sid-a"])  # not for it
    recovery.leave("sid-a", "pid-a", ["sid-a", "room:r1"], since)
    clock.now = 60.0
    missed.append(recovery.stamp('2["new_room_complete",{"room_id":"r2"}]'))

    answer = recovery.restore("pid-a", offset_of(seen))
    assert isinstance(answer, Recovered)
    assert answer.session.sid == "sid-a" and answer.missed == missed
    assert recovery.restore("pid-a", offset_of(seen)) == NotRecovered("unknown_session")


def test_a_browser_that_got_nothing_gets_everything_since_it_connected() -> None:
    recovery, _ = setup()
    recovery.stamp('2["before",1]')
    since = recovery.last
    after = [recovery.stamp('2["after",1]'), recovery.stamp('2["after",2]')]
    for offset in (None, "some-other-process.7", 42, f"{recovery.epoch}.1"):
        recovery.leave("sid-a", "pid-a", ["sid-a"], since)
        answer = recovery.restore("pid-a", offset)
        assert isinstance(answer, Recovered) and answer.missed == after, offset


def test_an_idle_browser_recovers_after_old_events_are_gone() -> None:
    recovery, clock = setup(max_events=3)
    last = [recovery.stamp(f'2["e",{i}]') for i in range(10)][-1]
    recovery.leave("sid-a", "pid-a", ["sid-a"], recovery.last)
    clock.now = 100.0
    answer = recovery.restore("pid-a", offset_of(last))
    assert answer == Recovered(answer.session, [])  # type: ignore[union-attr]


def test_what_cannot_be_recovered_says_why() -> None:
    recovery, clock = setup(max_events=3)
    first = recovery.stamp('2["e",0]')
    recovery.leave("sid-a", "pid-a", ["sid-a"], 0)
    for i in range(5):  # more than the buffer keeps, after what the browser saw
        recovery.stamp(f'2["e",{i + 1}]')
    assert recovery.restore("pid-a", offset_of(first)) == NotRecovered("events_dropped")

    recovery.leave("sid-b", "pid-b", ["sid-b"], recovery.last)
    assert recovery.restore("pid-b", f"{recovery.epoch}.99") == NotRecovered("unknown_offset")

    recovery.leave("sid-c", "pid-c", ["sid-c"], recovery.last)
    clock.now = 121.0
    assert recovery.restore("pid-c", None) == NotRecovered("expired")
    recovery.leave("sid-d", "pid-d", ["sid-d"], recovery.last)
    clock.now = 300.0
    assert [s.sid for s in recovery.expired()] == ["sid-d"]
    assert recovery.sizes() == {"recovery_sessions": 0, "recovery_events": 0}


operations = st.lists(
    st.one_of(
        st.tuples(st.just("emit"), st.sampled_from([None, "room:r1", "room:r2"])),
        st.tuples(st.just("receive"), st.integers(0, 3)),
        st.tuples(st.just("drop"), st.booleans()),
        st.tuples(st.just("wait"), st.sampled_from([1.0, 30.0, 130.0])),
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(ops=operations, max_events=st.integers(1, 20))
def test_a_browser_that_comes_back_has_every_event_for_it_exactly_once(
    ops: list[tuple[str, object]], max_events: int
) -> None:
    """One browser in room:r1 connects, receives a prefix of what is sent to it, drops,
    comes back (its connection may lose what was on the way): recovered, it has each event
    meant for it once, in order; not recovered, the reason is true."""
    recovery, clock = setup(max_events)
    rooms = ["sid-a", "room:r1"]
    sent: list[str] = []  # every event meant for the browser, in order
    received: list[str] = []
    in_flight: list[str] = []  # sent to its current connection, not yet received
    connected, pid, since = True, "pid-0", recovery.last
    offset: str | None = None
    for op, arg in ops:
        if op == "emit":
            packet = recovery.stamp(f'2["e",{len(sent)}]', rooms=None if arg is None else [arg])
            if arg in (None, "room:r1"):
                sent.append(packet)
                if connected:
                    in_flight.append(packet)
        elif op == "receive" and connected:
            got, in_flight = in_flight[: int(arg)], in_flight[int(arg) :]  # type: ignore[call-overload]
            received += got
            offset = offset_of(got[-1]) if got else offset
        elif op == "drop" and connected:
            connected, in_flight = False, []  # what was on the way is lost with it
            recovery.leave("sid-a", pid, rooms, since)
        elif op == "drop":  # it comes back
            connected = True
            answer = recovery.restore(pid, offset)
            if isinstance(answer, Recovered):
                received += answer.missed
                offset = offset_of(answer.missed[-1]) if answer.missed else offset
                assert received == sent
            else:
                assert answer.reason in ("expired", "events_dropped"), answer
                # a new session: it starts from now
                pid, since, received = f"pid-{len(sent)}", recovery.last, list(sent)
        elif op == "wait":
            clock.now += float(arg)  # type: ignore[arg-type]


def test_a_session_goes_back_only_to_its_holder() -> None:
    recovery, _ = setup()
    recovery.leave("sid-a", "pid-a", ["sid-a"], recovery.last, holder="sub:alice")
    assert recovery.restore("pid-a", None, holder="sub:mallory") == NotRecovered("unknown_session")
    assert recovery.restore("pid-a", None) == NotRecovered("unknown_session")
    answer = recovery.restore("pid-a", None, holder="sub:alice")  # still there for alice
    assert isinstance(answer, Recovered) and answer.session.sid == "sid-a"


def test_an_offset_of_any_length_is_an_answer_not_an_error() -> None:
    recovery, _ = setup()
    recovery.stamp('2["e",1]')
    for offset in (f"{recovery.epoch}." + "1" * 5000, f"{recovery.epoch}.٣", "x" * 100_000):
        recovery.leave("sid-a", "pid-a", ["sid-a"], recovery.last)
        assert isinstance(recovery.restore("pid-a", offset), Recovered)


def test_a_returning_browser_gets_offset_events_it_had_and_all_it_missed_each_once() -> None:
    """Transparent mode: the log keeps the backend's messages as they came; a browser
    back after a blip is replayed, of what it was written before it went, only the events
    (with their offsets and attachments), and everything that came while it was away."""
    log = SentLog(window=90.0, limit=100)
    written = [
        '2["a"]',  # 1: an event
        '31["ok"]',  # 2: the ack of the browser's emit: it had it, never twice
        '25["question"]',  # 3: the server's ack request: no offset, not again
        '51-["file",{"_placeholder":true,"num":0}]',  # 4 and its attachment 5
        b"\x00\xff",
    ]
    for message in written:
        log.add(message, 0.0, away=False)
    assert with_offset(written[3], 4, "e") == '51-["file",{"_placeholder":true,"num":0},"e.5"]'
    away_from = log.last + 1
    while_away = ['2["b"]', '32["late ack"]']
    for message in while_away:
        log.add(message, 1.0, away=True)
    missed = log.after(0)
    assert missed is not None
    assert replay(missed, 1, away_from, "e") == [
        '2["a","e.1"]',
        '51-["file",{"_placeholder":true,"num":0},"e.5"]',
        b"\x00\xff",
        '2["b","e.6"]',
        '32["late ack"]',
    ]
    later = log.after(5)  # it had everything up to the attachment
    assert later is not None and replay(later, 6, away_from, "e") == [
        '2["b","e.6"]',
        '32["late ack"]',
    ]
