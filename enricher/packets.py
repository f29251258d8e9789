"""Socket.IO packets read as far as a relay needs, and no further: their type, namespace,
ack id and event name, with the JSON arguments left as text. Pure: no I/O.

A packet is ``<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`` (the Socket.IO
protocol, version 5); the namespace is written only when it is not ``/``. A binary packet
(``BINARY_EVENT``, ``BINARY_ACK``) is followed by its ``attachments`` as separate binary
engine.io messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import jsonwire

CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)

_HEADER = re.compile(r"([0-6])(?:(\d+)-)?(/[^,]*,)?(\d*)")
# The first element of an event's array: its name, a JSON string.
_EVENT_NAME = re.compile(r'\[\s*"((?:[^"\\]|\\.)*)"')


class BadPacket(ValueError):
    """Text that is not a Socket.IO packet."""


@dataclass(frozen=True, slots=True)
class Header:
    """What precedes a packet's JSON: ``body`` is where the JSON starts in the text."""

    type: int
    namespace: str
    ack_id: int | None
    attachments: int
    body: int


def read_header(text: str) -> Header:
    """The header of a packet's text; raises :class:`BadPacket` if it has none."""
    match = _HEADER.match(text)
    if match is None:
        raise BadPacket(text[:1])
    if len(match.group(4)) > 15 or len(match.group(2) or "") > 15:
        raise BadPacket("a number too long")
    kind = int(match.group(1))
    count, namespace, ack = match.group(2), match.group(3), match.group(4)
    if count is not None and kind not in (BINARY_EVENT, BINARY_ACK):
        raise BadPacket("attachments on a packet that has none")
    return Header(
        type=kind,
        namespace=namespace[:-1] if namespace else "/",
        ack_id=int(ack) if ack else None,
        attachments=int(count) if count else 0,
        body=match.end(),
    )


def event_name(text: str, header: Header) -> str | None:
    """An event packet's name, read without decoding its arguments; None when its first
    element is not a string (not a valid event)."""
    match = _EVENT_NAME.match(text, header.body)
    if match is None:
        return None
    try:
        name = jsonwire.loads(f'"{match.group(1)}"')
    except ValueError:
        return None
    return name if isinstance(name, str) else None


def arguments(text: str, header: Header) -> tuple[Any, ...]:
    """An event packet's arguments after its name, decoded (``ValueError``, ``RecursionError``
    for text a JSON decoder refuses)."""
    data = jsonwire.loads(text[header.body :])
    if not isinstance(data, list) or not data:
        raise ValueError("an event is a non-empty array")
    return tuple(data[1:])


def _prefix(kind: int, namespace: str, ack_id: int | None) -> str:
    return f"{kind}{'' if namespace == '/' else namespace + ','}{'' if ack_id is None else ack_id}"


def event(name: str, args: tuple[Any, ...], namespace: str = "/") -> str:
    """The text of an event packet (no ack asked)."""
    return _prefix(EVENT, namespace, None) + jsonwire.dumps([name, *args])


def ack(ack_id: int, args: tuple[Any, ...], namespace: str = "/") -> str:
    """The text of an ack packet answering ``ack_id``."""
    return _prefix(ACK, namespace, ack_id) + jsonwire.dumps(list(args))


def connect_error(message: str, data: Any, namespace: str = "/") -> str:
    """The text of a CONNECT_ERROR packet, as a Node server sends a middleware's error."""
    body: dict[str, Any] = {"message": message}
    if data is not None:
        body["data"] = data
    return _prefix(CONNECT_ERROR, namespace, None) + jsonwire.dumps(body)
