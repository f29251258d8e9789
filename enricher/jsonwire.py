"""Socket.IO packets as text. ``dumps``/``loads`` are the JSON module python-socketio
encodes and decodes packets with: orjson, several times faster than the standard library,
which takes over for what orjson refuses (integer keys, integers beyond 64 bits, lone
surrogates, ``NaN``), so no payload fails that did before. :func:`event_packet` reads an
event packet that no JSON decoder can take."""

from __future__ import annotations

import json
import re
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


# A Socket.IO EVENT packet of namespace "/": its ack id (if any) and its event name.
_EVENT_PACKET = re.compile(r'2(\d*)\[\s*"((?:[^"\\]|\\.)*)"')


def event_packet(text: str) -> tuple[str, int | None, str] | None:
    """An EVENT packet of namespace ``/`` read without decoding its arguments: its event
    name, its ack id, and the packet without the ack id; None for anything else."""
    match = _EVENT_PACKET.match(text)
    if match is None:
        return None
    try:
        name = loads(f'"{match.group(2)}"')
    except ValueError:
        return None
    ack_id = int(match.group(1)) if match.group(1) else None
    return str(name), ack_id, "2" + text[1 + len(match.group(1)) :]
