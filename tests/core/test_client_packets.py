"""What a browser may send: each message checked before any of it is decoded, kept or
sent on."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from enricher.client_packets import ClientPackets, Refusal, Verdict


def test_events_acks_and_binary_packets_a_client_library_sends_pass() -> None:
    check = ClientPackets(max_bytes=1000)
    assert check.text("b1", '2["typing",{"room":"r1"}]') is Verdict.PASS
    assert check.text("b1", '2/supervisor,7["assign",1]') is Verdict.PASS
    assert check.text("b1", '0{"token":"t"}') is Verdict.PASS
    assert check.text("b1", "1") is Verdict.PASS
    assert check.text("b1", '31["ok"]') is Verdict.PASS
    assert (
        check.text(
            "b1", '52-3["upload",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
        )
        is Verdict.PASS
    )
    assert check.binary("b1", 400) is Verdict.PASS
    assert check.binary("b1", 400) is Verdict.PASS
    assert check.text("b1", '61-4[{"_placeholder":true,"num":0}]') is Verdict.PASS
    assert check.binary("b1", 10) is Verdict.PASS
    assert len(check) == 0


def test_an_event_whose_name_is_not_a_string_is_refused_with_an_error_for_its_ack() -> None:
    check = ClientPackets(max_bytes=1000)
    assert check.text("b1", '2[null,{"a":1}]') == Refusal("event_invalid", "other")
    assert check.text("b1", '212[true,"y"]') == Refusal("event_invalid", "other", "/", 12)
    assert check.text("b1", '2[{"a":1}]') == Refusal("event_invalid", "other")
    assert check.text("b1", '2{"a":1}') == Refusal("event_invalid", "other")
    assert check.text("b1", "2[]") == Refusal("event_invalid", "other")
    # a binary one: refused, and its attachments dropped as they come
    assert check.text("b1", '51-5[7,{"_placeholder":true,"num":0}]') == Refusal(
        "event_invalid", "other", "/", 5
    )
    assert check.binary("b1", 10) is Verdict.DROP
    assert check.text("b1", '2["next"]') is Verdict.PASS  # the connection goes on


def test_a_binary_packet_announcing_more_attachments_than_a_node_server_takes_closes() -> None:
    check = ClientPackets(max_bytes=1000)
    refusal = check.text("b1", '51000000-3["x",{"_placeholder":true,"num":0}]')
    assert refusal == Refusal("attachments_too_many", "x", "/", 3, close=True)
    assert check.text("b2", '511-["x"]') == Refusal("attachments_too_many", "x", close=True)
    assert check.text("b3", '50-["x"]') == Refusal("packet_invalid", "x", close=True)
    # what they send while their connections close is not read
    assert check.binary("b1", 900_000) is Verdict.DROP
    assert check.text("b2", '2["x"]') is Verdict.DROP
    for connection in ("b1", "b2", "b3"):
        check.forget(connection)
    assert len(check) == 0


def test_attachments_together_beyond_the_payload_limit_close_the_connection() -> None:
    check = ClientPackets(max_bytes=1000)
    text = '53-9["file",{"_placeholder":true,"num":0}]'
    assert check.text("b1", text) is Verdict.PASS
    assert check.binary("b1", 480) is Verdict.PASS
    assert check.binary("b1", 480) == Refusal("attachments_too_large", "file", "/", 9, close=True)
    assert check.binary("b1", 480) is Verdict.DROP


def test_what_is_no_packet_or_out_of_place_is_refused() -> None:
    check = ClientPackets(max_bytes=1000)
    assert check.text("b1", "hello") == Refusal("not_a_packet", "other")
    assert check.text("b1", '4{"message":"x"}') == Refusal("packet_invalid", "other")
    assert check.binary("b1", 3) == Refusal("attachment_unexpected", "other")
    assert check.text("b1", '51-["x",{"_placeholder":true,"num":0}]') is Verdict.PASS
    assert check.text("b1", '2["x"]') == Refusal("attachment_expected", "x", close=True)


def test_each_connection_is_checked_on_its_own() -> None:
    check = ClientPackets(max_bytes=1000)
    assert check.text("bad", '52-["x",{"_placeholder":true,"num":0}]') is Verdict.PASS
    assert check.text("good", '2["typing"]') is Verdict.PASS
    assert check.binary("good", 5) == Refusal("attachment_unexpected", "other")
    assert check.binary("bad", 5) is Verdict.PASS
    check.forget("bad")
    assert len(check) == 0


@given(st.lists(st.one_of(st.text(max_size=40), st.binary(max_size=40)), max_size=50))
def test_any_sequence_of_messages_gets_a_verdict_and_keeps_nothing_unbounded(
    messages: list[str | bytes],
) -> None:
    check = ClientPackets(max_bytes=100)
    for message in messages:
        if isinstance(message, str):
            verdict: object = check.text("b1", message)
        else:
            verdict = check.binary("b1", len(message))
        assert isinstance(verdict, Verdict | Refusal)
        assert len(check) <= 1


def test_what_python_engineio_decoded_as_json_is_no_packet() -> None:
    check = ClientPackets(max_bytes=1000)
    for message in (None, True, 7, ["x"]):
        assert check.check("b1", message) == Refusal("not_a_packet", "other")
    assert check.check("b1", '2["typing"]') is Verdict.PASS
