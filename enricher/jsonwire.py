"""The JSON module python-socketio encodes and decodes packets with: orjson, several times
faster than the standard library, which takes over for what orjson refuses (integer keys,
integers beyond 64 bits, lone surrogates, ``NaN``), so no payload fails that did before."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(obj: Any, **_: Any) -> str:
    """Compact JSON text (python-socketio passes ``separators``; orjson is always compact)."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(obj, separators=(",", ":"))


def loads(text: str | bytes, **_: Any) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
