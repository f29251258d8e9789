"""Hypothesis-generated backend events through the real process: the Node backend emits a
few hundred odd payloads of every upstream event in one burst, and everything is accounted
for at the browser, in the logs, the metrics and the backend's REST request log."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import strategies as st

from enricher.payloads import Rejected, parse_message, parse_room

from ..tools import drawn
from .conftest import Backend, BrowsersFactory, EnricherFactory, barrier, stack

# the join against odd events is the same in both modes; the expectations here are shared
# mode's: enricher's room:join answers, room:new_message to the browsers that joined
pytestmark = [pytest.mark.e2e, pytest.mark.enricher, pytest.mark.upstream_mode("shared")]

INPUTS = 400  # events in the burst

# Room ids the browser joins (room:new_message reaches joined browsers only): path-like ones
# included, which must reach REST as one escaped path segment.
JOINED = ["room-a", "../admin", "a/b?c", "%2e%2e", "...", "🙂", " padded ", "7", 7]
NOT_IDS = [None, "", "   ", True, 1.5, [], {}, "\ud800", "a\udfffb", "a\x00b", "x" * 300, ["a"]]
NOT_IDS += [".", ".."]  # no URL path can carry them
LONE_SURROGATES = ["\ud800", "a\udfffb", "\udc00\ud800"]
HUGE = ["x" * 100_000, "漢" * 40_000, "🙂" * 30_000]
OTHER_EVENTS = ["typing", "message:status", "agent:status", "room:updated", "événement", "🙂"]


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": [value]}
    return value


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(LONE_SURROGATES),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
odd_values = st.one_of(
    json_values,
    st.sampled_from(HUGE),
    st.integers(1, 200).map(nested),  # up to 400 levels (deeper: test_fanout.py)
)
any_room_id = st.one_of(
    st.sampled_from(JOINED), st.sampled_from(NOT_IDS), st.uuids().map(str), st.text(max_size=12)
)
joined_or_not_id = st.sampled_from(JOINED) | st.sampled_from(NOT_IDS)
message_ids = st.one_of(
    st.uuids().map(str), st.sampled_from(["dup-1", "dup-2"]), st.none(), st.integers(), odd_values
)
timestamps = st.one_of(
    st.just("2025-11-02T10:30:05.000Z"), st.text(max_size=30), st.integers(), odd_values
)


def message(room_ids: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    fields = {
        "id": message_ids,
        "room_id": room_ids,
        "user_id": st.none() | st.uuids().map(str) | odd_values,
        "content_type": st.just("text") | odd_values,
        "content_text": st.text() | odd_values,
        "created_at": timestamps,
        "metadata": odd_values,
    }
    others = {k: v for k, v in fields.items() if k != "room_id"}
    with_room = st.fixed_dictionaries({"room_id": room_ids}, optional=others)
    return st.one_of(with_room, with_room, st.fixed_dictionaries({}, optional=fields), json_values)


new_room_fields = {
    "room_phone": st.just("6281234") | odd_values,
    "room_title": st.just("Personal") | odd_values,
    "room_created_at": timestamps,
    "leads_info": st.none()
    | st.fixed_dictionaries({"name": st.text() | odd_values, "phone": odd_values})
    | odd_values,
    "unread_count": st.integers(0, 9) | odd_values,
    "last_message": st.none() | odd_values,
    "participants": st.just([]) | odd_values,
}
with_room_id = st.fixed_dictionaries({"room_id": any_room_id}, optional=new_room_fields)
new_room_payload = st.one_of(
    with_room_id,
    with_room_id,
    st.fixed_dictionaries({}, optional={"id": any_room_id, **new_room_fields}),
    json_values,
)


def arguments(payload: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    single = payload.map(lambda p: [p])
    return st.one_of(
        single,
        single,
        single,
        st.just([]),
        st.tuples(payload, json_values).map(list),
    )


events = st.one_of(
    st.tuples(st.just("new_room"), arguments(new_room_payload)),
    st.tuples(st.just("new_message"), arguments(message(any_room_id))),
    st.tuples(st.just("room:new_message"), arguments(message(joined_or_not_id))),
    st.tuples(st.sampled_from(OTHER_EVENTS), st.lists(odd_values, max_size=3)),
)


def canonical(value: Any) -> str:
    """JSON text that survives a trip through JavaScript, whose numbers are doubles: 1.0
    is 1 there, -0.0 is 0, and a large integral number may be written another way."""

    def norm(v: Any) -> Any:
        if isinstance(v, int | float) and not isinstance(v, bool) and abs(v) >= 2**53:
            return float(v)
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, list):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v

    return json.dumps(norm(value), sort_keys=True)


def classify(event: str, args: list[Any]) -> str | None:
    """The room id the proxy ties the event to; None when it is rejected (not a room's)."""
    payload = args[0] if args else None
    try:
        if event == "new_room":
            return parse_room(payload).value.room_id
        return parse_message(payload).value.room_id
    except Rejected:
        return None


async def test_odd_backend_events_are_all_forwarded_degraded_or_counted(
    backend: Backend, make_enricher: EnricherFactory, browsers: BrowsersFactory
) -> None:
    sent = drawn(events, INPUTS)
    proxy, group = await stack(
        backend, make_enricher, browsers, 1, ["--raw"], ENRICHER_HOLD_TIMEOUT="0.5"
    )
    for room_id in JOINED:
        assert (await group.emit(0, "room:join", {"room_id": room_id}))["args"][0]["ok"]

    async with backend.session.post(
        backend.url + "/_control/emit-batch",
        json={"events": [{"event": e, "args": a} for e, a in sent]},
    ) as resp:
        assert resp.status == 200, await resp.text()

    by_event: dict[str, Counter[str]] = {}
    rejected: Counter[str] = Counter()
    new_rooms: set[str] = set()
    new_rooms_valid = 0
    for event, args in sent:
        if event in ("new_room", "new_message", "room:new_message"):
            room_id = classify(event, args)
            if room_id is None:
                rejected[event] += 1
            elif event == "new_room":
                new_rooms.add(room_id)
                new_rooms_valid += 1
                continue  # its snapshot, not its payload, reaches browsers
        by_event.setdefault(event, Counter())[canonical(args)] += 1

    for room_id in new_rooms:
        await group.wait_all("new_room_complete", room_id, timeout=20)
    await barrier(backend, group, timeout=20)

    got: dict[str, Counter[str]] = {}
    snapshots: Counter[str] = Counter()
    enriched_new_rooms: Counter[str] = Counter()
    for item in group.child.items:
        if item.get("type") != "raw" or item["event"].startswith(("test:", "enricher:")):
            continue
        event, args = item["event"], item["args"]
        if event == "new_room_complete":
            snapshots[args[0]["room_id"]] += 1
        elif (
            event == "new_room"
            and isinstance(args[0] if args else None, dict)
            and ("enrichment" in args[0] and len(args) == 1)
        ):
            enriched_new_rooms[args[0]["room_id"]] += 1
        else:
            got.setdefault(event, Counter())[canonical(args)] += 1

    metrics = await proxy.metrics()

    def duplicates(event: str) -> int:
        return int(metrics.get(f'enricher_duplicates_suppressed_total{{event="{event}"}}', 0))

    # Every event is forwarded unchanged, or suppressed as a duplicate and counted as one.
    for event, want in by_event.items():
        have = got.get(event, Counter())
        extra = [text[:300] for text in have - want]
        assert not extra, f"{event}: browsers got payloads the backend never sent: {extra}"
        missing = sum((want - have).values())
        expected = duplicates(event) if event in ("new_message", "room:new_message") else 0
        assert missing == expected, f"{event}: {missing} not forwarded, {expected} duplicates"
    assert set(got) <= set(by_event)
    # Every room gets one snapshot (and, new_room_mode enriched, one new_room).
    assert snapshots == Counter(new_rooms) == enriched_new_rooms
    assert duplicates("new_room") == new_rooms_valid - len(new_rooms)
    # Every rejected payload is logged and counted.
    logged = Counter(line["upstream_event"] for line in proxy.logs("payload_rejected"))
    assert logged == rejected
    counted = {
        e: sum(
            v
            for k, v in metrics.items()
            if k.startswith(f'enricher_payloads_rejected_total{{event="{e}"')
        )
        for e in rejected
    }
    assert counted == dict(rejected)
    # No room id reached a URL path unescaped: each request is /rooms/<one segment>.
    requests = [line for line in backend.child.items if line.get("event") == "rest"]
    for line in requests:
        match = re.fullmatch(r"/rooms/([^/?#]+)", line["path"])
        assert match and match.group(1) not in (".", ".."), line
        assert unquote(match.group(1)) == line["room_id"]
    assert {line["room_id"] for line in requests} == new_rooms
    # The process is alive, and nothing in its log is a bug.
    assert proxy.child.proc.returncode is None
    assert not [t for t in proxy.child.text if "Traceback" in t or "join_failed" in t]
    print(
        f"\nupstream fuzz: {len(sent)} events ({Counter(e for e, _ in sent)}), "
        f"{sum(rejected.values())} rejected ({dict(rejected)}), {len(new_rooms)} snapshots, "
        f"duplicates {[duplicates(e) for e in ('new_room', 'new_message', 'room:new_message')]}"
    )
