"""The join's memory: entries live a fixed time from their last write, the oldest leave
first when full."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from enricher.expiring import Expiring

from ..tools import Clock


def test_an_entry_is_forgotten_after_its_lifetime_even_before_it_is_removed() -> None:
    clock = Clock()
    seen: Expiring[str, bool] = Expiring(100, 10.0, clock)
    seen["m1"] = True
    clock.now = 9.9
    assert "m1" in seen and seen.get("m1") is True and seen["m1"] is True
    clock.now = 10.0
    assert "m1" not in seen and seen.get("m1") is None
    assert seen.pop("m1", "gone") == "gone"
    assert len(seen) == 0


def test_writing_again_gives_a_new_lifetime() -> None:
    clock = Clock()
    seen: Expiring[str, int] = Expiring(100, 10.0, clock)
    seen["a"], seen["b"] = 1, 2
    clock.now = 8.0
    seen["a"] = 3
    clock.now = 12.0  # b expired, a written again at 8 lives until 18
    assert seen.get("a") == 3 and "b" not in seen
    assert list(seen) == ["a"]


def test_when_full_the_oldest_written_leaves_first() -> None:
    clock = Clock()
    rooms: Expiring[str, int] = Expiring(3, 60.0, clock)
    for i, room in enumerate(["r1", "r2", "r3"]):
        rooms[room] = i
    rooms["r1"] = 10  # written again: now the newest
    rooms["r4"] = 4
    assert list(rooms) == ["r3", "r1", "r4"]
    assert len(rooms) == 3 and "r2" not in rooms


@given(
    st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.floats(min_value=0, max_value=5)),
        max_size=60,
    )
)
def test_it_answers_as_a_dict_of_write_times_would(writes: list[tuple[str, float]]) -> None:
    """Against the plainest model: each key's last write time, in write order."""
    clock = Clock()
    ttl, size = 4.0, 5
    memory: Expiring[str, float] = Expiring(size, ttl, clock)
    model: dict[str, float] = {}
    for key, step in writes:
        clock.now += step
        memory[key] = clock.now
        model.pop(key, None)
        model[key] = clock.now
        while len(model) > size:
            del model[next(iter(model))]
        alive = [k for k, at in model.items() if at + ttl > clock.now]
        assert list(memory) == alive
        for k in "abcdefgh":
            assert memory.get(k) == (model[k] if k in alive else None)
