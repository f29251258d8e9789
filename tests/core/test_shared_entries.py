"""The shared sequence's entries: written to the stream's fields and read back as they were."""

from __future__ import annotations

import pytest

from enricher.shared_entries import Entry, MalformedEntry, Pending, read_entry


def as_read(fields: list[str | bytes]) -> dict[bytes, bytes]:
    """The fields as redis-py reads them back."""
    raw = [field.encode() if isinstance(field, str) else field for field in fields]
    return dict(zip(raw[::2], raw[1::2], strict=True))


def test_an_entry_reads_back_as_it_was_written() -> None:
    pending = Pending.of(
        '51-["file",{"_placeholder":true,"num":0}]',
        ["room:r1"],
        ["sid-x"],
        [b"\x00\xff"],
        identity=None,
        unique=False,
        tag="{t}",
    )
    assert pending.kind == "content" and pending.dedup.startswith("{t}:content:")
    entry = read_entry(b"7-1", as_read(pending.fields()))
    assert entry == Entry(
        7, pending.packet, ("room:r1",), ("sid-x",), (b"\x00\xff",), pending.dedup
    )
    assert pending.entry(7) == Entry(7, pending.packet, ("room:r1",), ("sid-x",), (b"\x00\xff",))


def test_a_gap_reads_back_as_a_gap() -> None:
    gap = Pending(None, None, (), (), "none", "{t}")
    assert read_entry(b"3-1", as_read(gap.fields())) == Entry(3, None, None, (), ())


def test_copies_of_one_event_have_one_dedup_key() -> None:
    def key(packet: str, identity: str | None = None, unique: bool = False) -> str:
        pending = Pending.of(packet, None, (), (), identity=identity, unique=unique, tag="{t}")
        return pending.dedup

    assert key('2["a"]', identity="m1") == key('2["b"]', identity="m1")  # built differently
    assert key('2["a"]') == key('2["a"]') != key('2["b"]')
    assert key('2["a"]', unique=True) != key('2["a"]')


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({b"p": b"\xff\xfe"}, "p: not UTF-8"),
        ({b"p": b'2["e"]', b"k": b"\xff"}, "k: not UTF-8"),
        ({b"p": b'2["e"]', b"r": b"room:r1"}, "r: not JSON"),
        ({b"p": b'2["e"]', b"r": b'"room:r1"'}, "r: not a list of strings"),
        ({b"p": b'2["e"]', b"s": b'["sid", 1]'}, "s: not a list of strings"),
        ({b"x": b"1"}, "neither a packet nor a gap"),
    ],
)
def test_an_entry_enricher_did_not_write_is_malformed(
    fields: dict[bytes, bytes], reason: str
) -> None:
    with pytest.raises(MalformedEntry) as raised:
        read_entry(b"5-1", fields)
    assert (raised.value.number, raised.value.reason) == (5, reason)
