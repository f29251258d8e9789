"""python-socketio's JSON module: orjson's speed, and every payload the standard library took."""

from __future__ import annotations

import json

import pytest

from enricher import jsonwire


@pytest.mark.parametrize(
    "value",
    [
        {"room_id": "r1", "text": "Halo 🙂 é 漢字", "n": 3, "ok": True, "none": None},
        [1.5, -2, "x" * 10_000],
        {1: "integer key"},  # orjson refuses non-string keys
        {"big": 2**70},  # and integers beyond 64 bits
        {"lone": "\ud800"},  # and lone surrogates
    ],
)
def test_what_goes_out_reads_back_as_the_standard_library_reads_it(value: object) -> None:
    text = jsonwire.dumps(value, separators=(",", ":"))
    assert json.loads(text) == json.loads(json.dumps(value))
    assert jsonwire.loads(text) == json.loads(text)


@pytest.mark.parametrize("text", ['{"a":NaN}', '{"a":Infinity}', '"\\ud800"', '{"a":1}'])
def test_what_comes_in_is_read_as_the_standard_library_reads_it(text: str) -> None:
    got, want = jsonwire.loads(text), json.loads(text)
    assert repr(got) == repr(want)


def test_bad_json_still_fails() -> None:
    with pytest.raises(ValueError):
        jsonwire.loads("not json{")
