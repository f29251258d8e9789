"""Socket.IO packets read as far as the relay needs: what it decides on must be read right,
and what it writes must be what socket.io-client expects."""

from __future__ import annotations

import asyncio

import pytest

from enricher import packets
from enricher.recovery import SentLog
from enricher.sessions import _stamped


@pytest.mark.parametrize(
    ("text", "kind", "namespace", "ack_id", "attachments", "rest"),
    [
        ("0", packets.CONNECT, "/", None, 0, ""),
        ('0{"token":"x"}', packets.CONNECT, "/", None, 0, '{"token":"x"}'),
        ("0/admin,", packets.CONNECT, "/admin", None, 0, ""),
        ('0/admin,{"a":1}', packets.CONNECT, "/admin", None, 0, '{"a":1}'),
        ("1", packets.DISCONNECT, "/", None, 0, ""),
        ("1/admin,", packets.DISCONNECT, "/admin", None, 0, ""),
        ('2["hi"]', packets.EVENT, "/", None, 0, '["hi"]'),
        ('212["echo",1]', packets.EVENT, "/", 12, 0, '["echo",1]'),
        ('2/foo,7["getId"]', packets.EVENT, "/foo", 7, 0, '["getId"]'),
        ("33[null]", packets.ACK, "/", 3, 0, "[null]"),
        ('4{"message":"no"}', packets.CONNECT_ERROR, "/", None, 0, '{"message":"no"}'),
        ('51-["f",{"_placeholder":true,"num":0}]', packets.BINARY_EVENT, "/", None, 1, None),
        ('52-/a,9["f",{}]', packets.BINARY_EVENT, "/a", 9, 2, '["f",{}]'),
        ("61-3[{}]", packets.BINARY_ACK, "/", 3, 1, "[{}]"),
    ],
)
def test_headers_are_read_as_a_socket_io_server_reads_them(
    text: str, kind: int, namespace: str, ack_id: int | None, attachments: int, rest: str | None
) -> None:
    header = packets.read_header(text)
    assert (header.type, header.namespace, header.ack_id, header.attachments) == (
        kind,
        namespace,
        ack_id,
        attachments,
    )
    if rest is not None:
        assert text[header.body :] == rest


@pytest.mark.parametrize("text", ["", "x", "9", "21-[]"])
def test_text_that_is_no_packet_is_said_so(text: str) -> None:
    with pytest.raises(packets.BadPacket):
        packets.read_header(text)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ('2["new_room",{}]', "new_room"),
        ('2 [ "sp ace" ]', None),  # the name must follow the type at once: none here
        ('2["caf\\u00e9"]', "café"),
        ('2["a\\"b"]', 'a"b'),
        ("2[null,{}]", None),
        ('2[["x"]]', None),
        ("2[]", None),
    ],
)
def test_event_names_are_read_without_decoding_the_arguments(text: str, name: str | None) -> None:
    header = packets.read_header(text)
    assert packets.event_name(text, header) == name


def test_what_is_written_is_what_a_client_reads() -> None:
    assert packets.event("new_room_complete", ({"a": 1},)) == '2["new_room_complete",{"a":1}]'
    assert packets.event("x", (), "/s") == '2/s,["x"]'
    assert packets.ack(4, ({"error": "rate_limited"},), "/s") == '3/s,4[{"error":"rate_limited"}]'
    assert packets.connect_error("unauthorized", {"reason": "r"}) == (
        '4{"message":"unauthorized","data":{"reason":"r"}}'
    )
    header = packets.read_header('2["e",1,"two"]')
    assert packets.arguments('2["e",1,"two"]', header) == (1, "two")


@pytest.mark.parametrize(
    ("message", "stamped"),
    [
        ('2["tick",1]', '2["tick",1,"7"]'),
        ('23["ask",1]', '23["ask",1]'),  # its last argument is the browser's callback
        ('2/other,["tick",1]', '2/other,["tick",1]'),  # another namespace: its own session
        ('51-["f",{"_placeholder":true,"num":0}]', '51-["f",{"_placeholder":true,"num":0},"7"]'),
        ('51-/o,["f",{"_placeholder":true,"num":0}]', '51-/o,["f",{"_placeholder":true,"num":0}]'),
        ("30[null]", "30[null]"),  # acks carry no offset
        ('0{"sid":"s"}', '0{"sid":"s"}'),
        (b"\x00\x01", b"\x00\x01"),
    ],
)
def test_events_of_the_default_namespace_carry_one_offset(message: str, stamped: str) -> None:
    assert _stamped(message, "7") == stamped


def test_a_browser_back_gets_what_was_sent_after_its_offset() -> None:
    log = SentLog(window=10.0, limit=100)
    numbers = [log.add(f"m{i}", now=float(i), away=False) for i in range(5)]
    assert numbers == [1, 2, 3, 4, 5]
    assert log.after(3) == ["m3", "m4"]
    assert log.after(5) == []
    assert log.after(6) is None  # an offset never given


def test_what_was_sent_before_the_heartbeat_window_is_forgotten_while_connected() -> None:
    log = SentLog(window=10.0, limit=100)
    for second in range(30):
        log.add(f"m{second}", now=float(second), away=False)
    assert len(log) <= 11
    assert log.after(5) is None  # long gone: the browser would have been noticed gone
    assert log.after(25) == ["m25", "m26", "m27", "m28", "m29"]


def test_while_away_everything_is_kept_up_to_the_limit_then_nothing() -> None:
    log = SentLog(window=1.0, limit=4)
    log.add("a", now=0.0, away=False)
    for second in range(3):
        log.add(f"away{second}", now=100.0 + second, away=True)
    assert log.after(1) == ["away0", "away1", "away2"]
    log.add("one too many", now=200.0, away=True)
    assert log.overflowed
    assert log.after(1) is None
    assert log.last == 5  # numbers go on


def test_numbers_longer_than_any_id_are_no_packet() -> None:
    with pytest.raises(packets.BadPacket):
        packets.read_header("2" + "9" * 5000 + '["x"]')


async def test_a_session_that_leaves_does_not_cancel_the_others_rest_answer() -> None:
    from enricher.across_sessions import SharedRooms
    from enricher.join_types import RestFailure

    asked, answered = asyncio.Event(), asyncio.Event()

    async def fetch_room(room_id: str, wanted: object) -> RestFailure:
        asked.set()
        await answered.wait()
        return RestFailure("rest_status_5xx")

    rooms = SharedRooms(fetch_room, reuse=3.0, clock=lambda: 1.0)
    first = asyncio.ensure_future(rooms.fetch("r1", None))
    second = asyncio.ensure_future(rooms.fetch("r1", None))
    await asked.wait()
    first.cancel()  # its browser left
    answered.set()
    assert await second == (1.0, RestFailure("rest_status_5xx"))
    assert rooms.requests == 1
