"""Payloads as real backends send them: drifting fields never crash, never lose an event."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enricher.join import Join
from enricher.join_types import Emit
from enricher.payloads import (
    Message,
    Rejected,
    parse_message,
    parse_rest_room,
    parse_room,
    room_id_of,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
room_ids = st.one_of(
    st.text(max_size=300), st.integers(), st.none(), st.just("../admin"), st.just("a/b?c")
)
field_names = st.sampled_from(
    [
        "id",
        "room_id",
        "created_at",
        "content_text",
        "content_type",
        "user_id",
        "room_phone",
        "room_title",
        "leads_info",
        "unread_count",
        "message_count",
        "participants",
        "last_message",
        "last_message_text",
        "last_message_timestamp",
    ]
)
payloads = st.one_of(
    json_values,
    st.dictionaries(field_names, json_values, max_size=10),
    st.fixed_dictionaries(
        {"room_id": room_ids}, optional={"id": json_values, "created_at": json_values}
    ),
)


@settings(max_examples=500, deadline=None)
@given(event=st.sampled_from(["new_room", "new_message", "room:new_message"]), payload=payloads)
def test_any_payload_is_forwarded_or_degraded_never_raised(event: str, payload: Any) -> None:
    join = Join()
    actions = join.upstream_event(event, (payload,), now=0.0)
    emitted = [a for a in actions if isinstance(a, Emit)]
    if event == "new_room":
        # a usable room is held (its snapshot comes by the deadline), anything else is forwarded
        later = [a for a in join.tick(10.0) if isinstance(a, Emit)]
        assert emitted or later
        assert all(a.event in ("new_room", "new_room_complete") for a in emitted + later)
    else:
        assert [a.event for a in emitted] == [event]
        assert emitted[0].args == (payload,)


def test_flat_and_nested_rest_shapes_give_the_same_last_message() -> None:
    base = {"room_id": "r1", "room_phone": "62", "unread_count": "2", "leads_info": None}
    flat = {
        **base,
        "last_message_text": "hi",
        "last_message_timestamp": "2025-11-02T10:30:05.000Z",
        "last_message_type": "text",
    }
    nested = {
        **base,
        "last_message": {
            "id": "m2",
            "content_text": "hi",
            "content_type": "text",
            "created_at": "2025-11-02T10:30:05.000Z",
        },
    }
    flat_room = parse_rest_room({"data": flat}, "r1").value
    nested_room = parse_rest_room({"data": nested}, "r1").value
    assert isinstance(flat_room.last_message, Message) and isinstance(
        nested_room.last_message, Message
    )
    assert flat_room.last_message.created_at == nested_room.last_message.created_at
    assert flat_room.last_message.content_text == nested_room.last_message.content_text == "hi"
    assert flat_room.unread_count == 2  # a count sent as a string is still a count


def test_odd_fields_get_defaults_and_are_named() -> None:
    parsed = parse_room(
        {
            "room_id": 42,
            "leads_info": "Budi",
            "unread_count": -1,
            "participants": "x",
            "room_phone": 628,
        }
    )
    assert parsed.value.room_id == "42" and parsed.value.phone == "628"
    assert parsed.value.leads_info is None and parsed.value.unread_count is None
    assert set(parsed.warnings) == {"leads_info", "unread_count", "participants", "room_phone"}
    message = parse_message({"room_id": "r", "id": "m", "created_at": "yesterday"})
    assert message.value.created_at is None and message.warnings == ("created_at",)


@pytest.mark.parametrize("room_id", [".", "..", " .. ", "\ud800", "a\x00b", "", None, True])
def test_what_no_url_path_segment_can_carry_is_not_a_room_id(room_id: object) -> None:
    with pytest.raises(Rejected):
        room_id_of(room_id)


@pytest.mark.parametrize("room_id", ["...", "../admin", "%2e%2e", "a/b?c", "🙂", 7])
def test_odd_but_usable_room_ids_are_kept(room_id: object) -> None:
    assert room_id_of(room_id) == str(room_id)
