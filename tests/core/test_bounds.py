"""Memory bounds of the join: a million rooms over time, and a burst, never grow a table
beyond its size limit, and the ages limit what stays."""

from __future__ import annotations

import time

from enricher.join import Join
from enricher.join_types import Emit, JoinLimits, RestFailure
from enricher.payloads import Message, Parsed, Room

ROOMS = 1_000_000
RATE = 2_000.0  # new rooms per simulated second
LIMITS = JoinLimits(
    hold_timeout=3.0,
    max_pending_rooms=2_000,
    max_known_rooms=50_000,  # under RATE x known_room_ttl: the size limit is what holds
    known_room_ttl=60.0,
    max_message_ids=20_000,  # over the messages in message_id_ttl: the age is what holds
    message_id_ttl=30.0,
    early_message_ttl=10.0,
)


def bounds(join: Join) -> dict[str, int]:
    limits = join.limits
    return {
        "pending_rooms": limits.max_pending_rooms,
        "snapshots_sent": limits.max_known_rooms,
        "early_messages": limits.max_known_rooms,
        "message_ids": 2 * limits.max_message_ids,  # new_message and room:new_message
        "timers": 4 * limits.max_pending_rooms + 1024,
        "rooms_checked": limits.max_known_rooms,
    }


def test_a_million_rooms_and_a_burst_keep_every_table_within_its_bounds() -> None:
    join = Join(limits=LIMITS)
    limit = bounds(join)
    peak = dict.fromkeys(limit, 0)
    snapshots = 0
    started = time.perf_counter()

    def carry(actions: list[object]) -> None:
        nonlocal snapshots
        for action in actions:
            if isinstance(action, Emit) and action.event == "new_room_complete":
                snapshots += 1

    def check() -> None:
        for table, size in join.sizes().items():
            peak[table] = max(peak[table], size)
            assert size <= limit[table], (table, size, limit[table])

    def message(i: int, room_id: str) -> dict[str, object]:
        return {"id": f"m{i}", "room_id": room_id, "content_text": "hi", "created_at": i}

    now = 0.0
    for i in range(ROOMS):
        # the last 100,000 rooms in one burst, at the same instant
        now = i / RATE if i < ROOMS - 100_000 else now
        room_id = f"r{i}"
        if i % 100 == 1:  # its first message before its new_room
            carry(join.upstream_event("new_message", (message(i, room_id),), now))
        if i % 100 == 2:  # a message of a room older than the proxy, never announced
            carry(join.upstream_event("new_message", (message(i, f"old{i}"),), now))
        carry(join.upstream_event("new_room", ({"room_id": room_id},), now))
        if i % 10 == 3:
            carry(join.upstream_event("new_message", (message(i, room_id),), now))
            carry(join.upstream_event("room:new_message", (message(i, room_id),), now))
        if i % 10 == 4:
            last = Message(f"x{i}", room_id, None, None, "hi", "text", None)
            rest = Room(room_id, phone="62", unread_count=1, message_count=1, last_message=last)
            carry(join.rest_answer(room_id, Parsed(rest), now))
        elif i % 10 == 5:
            carry(join.rest_answer(room_id, RestFailure("rest_status_5xx"), now))
        if i % 500 == 0:
            carry(join.tick(now))
            check()
    check()
    # Everything held goes out by its deadline; then the ages empty what is left.
    now += LIMITS.hold_timeout
    carry(join.tick(now))
    assert snapshots == ROOMS  # one snapshot per room, held or pushed out by capacity
    now += LIMITS.known_room_ttl + 1
    carry(join.upstream_event("new_message", (message(-1, "late"),), now))
    carry(join.upstream_event("new_room", ({"room_id": "last"},), now))
    sizes = join.sizes()
    assert sizes["pending_rooms"] == 1 and sizes["snapshots_sent"] == 0, sizes
    assert sizes["early_messages"] == 1 and sizes["message_ids"] == 1, sizes
    print(f"\n{ROOMS} rooms in {time.perf_counter() - started:.1f} s: peak {peak}, after {sizes}")
