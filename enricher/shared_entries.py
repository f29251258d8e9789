"""The entries of the sequence replicas share in Redis (see enricher/shared.py): what one
holds, the fields it is written to the stream with and read back from, and what makes two
replicas' copies of a broadcast one event. No I/O here. An entry this version cannot read
(written by hand, by another program, or damaged) raises :class:`MalformedEntry`; the
shared log decides what becomes of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .join_types import NEW_MESSAGE, NEW_ROOM, ROOM_MESSAGE, SNAPSHOT


def identity(event: str, data: Sequence[Any]) -> str | None:
    """What makes one replica's broadcast the same event as another's, when the content
    alone may not: a room's snapshot is one per room (replicas may build it from different
    answers), a message one per id. None: the content tells."""
    payload = data[0] if data else None
    if not isinstance(payload, dict):
        return None
    if event in (SNAPSHOT, NEW_ROOM):
        key = payload.get("room_id", payload.get("id"))
    elif event in (NEW_MESSAGE, ROOM_MESSAGE):
        key = payload.get("id")
    else:
        return None
    if isinstance(key, str | int) and not isinstance(key, bool):
        return f"{event}\x00{key}"
    return None


@dataclass(frozen=True, slots=True)
class Entry:
    """A broadcast as the replicas share it (``packet`` None: a gap)."""

    number: int
    packet: str | None
    rooms: tuple[str, ...] | None
    skip: tuple[str, ...]
    attachments: tuple[bytes, ...]
    key: str | None = None  # the dedup key it was appended with (what event it is)


@dataclass(slots=True)
class Pending:
    """A broadcast (``packet`` None: a gap) waiting to be appended."""

    packet: str | None
    rooms: Sequence[str] | None
    skip: Sequence[str]
    attachments: Sequence[bytes]
    kind: str  # none (appended whatever is there), id, content
    dedup: str  # the dedup key

    @classmethod
    def of(
        cls,
        packet: str,
        rooms: Sequence[str] | None,
        skip: Sequence[str],
        attachments: Sequence[bytes],
        *,
        identity: str | None,
        unique: bool,
        tag: str,
    ) -> Pending:
        """A broadcast to append, with its dedup key (a Redis key: ``tag`` is its hash
        tag). Merged with other replicas' copies of the same ``identity``, or else of the
        same content; never when ``unique``."""
        kind = "none" if unique else "id" if identity is not None else "content"
        what = [identity or packet, rooms, sorted(skip)]
        if kind == "content":
            what.append([hashlib.sha256(part).hexdigest() for part in attachments])
        dedup = f"{tag}:{kind}:{hashlib.sha256(orjson.dumps(what)).hexdigest()[:32]}"
        return cls(packet, rooms, skip, attachments, kind, dedup)

    def entry(self, number: int) -> Entry:
        return Entry(
            number,
            self.packet,
            None if self.rooms is None else tuple(self.rooms),
            tuple(self.skip),
            tuple(self.attachments),
        )

    def fields(self) -> list[str | bytes]:
        """The stream entry's fields, as :func:`read_entry` reads them back."""
        if self.packet is None:
            return ["gap", "1"]
        fields: list[str | bytes] = ["k", self.dedup, "p", self.packet]
        if self.rooms is not None:
            fields += ["r", orjson.dumps(list(self.rooms))]
        if self.skip:
            fields += ["s", orjson.dumps(list(self.skip))]
        for index, attachment in enumerate(self.attachments):
            fields += [f"a{index}", attachment]
        return fields


class MalformedEntry(ValueError):
    """A stream entry that is not what :meth:`Pending.fields` writes."""

    def __init__(self, number: int, reason: str) -> None:
        super().__init__(f"entry {number}: {reason}")
        self.number = number
        self.reason = reason


def read_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    """An entry as read from the stream (its id is its number, ``<number>-1``)."""
    number = int(entry_id.split(b"-")[0])
    packet = _text(number, fields, b"p")
    if packet is None and b"gap" not in fields:
        raise MalformedEntry(number, "neither a packet nor a gap")
    attachments: list[bytes] = []
    while (attachment := fields.get(b"a%d" % len(attachments))) is not None:
        attachments.append(attachment)
    return Entry(
        number,
        packet,
        _names(number, fields, b"r"),
        _names(number, fields, b"s") or (),
        tuple(attachments),
        _text(number, fields, b"k"),
    )


def _text(number: int, fields: dict[bytes, bytes], name: bytes) -> str | None:
    value = fields.get(name)
    try:
        return None if value is None else value.decode()
    except UnicodeDecodeError:
        raise MalformedEntry(number, f"{name.decode()}: not UTF-8") from None


def _names(number: int, fields: dict[bytes, bytes], name: bytes) -> tuple[str, ...] | None:
    """A field holding a JSON list of rooms or sids."""
    value = fields.get(name)
    if value is None:
        return None
    try:
        names = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise MalformedEntry(number, f"{name.decode()}: not JSON") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise MalformedEntry(number, f"{name.decode()}: not a list of strings")
    return tuple(names)
