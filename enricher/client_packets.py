"""What a browser may send: the checks each of its messages passes before enricher
decodes, keeps or forwards any of it, in both upstream modes. Pure: no I/O.

A Node server's parser (socket.io-parser 4.2) refuses the same packets, and closes the
browser's connection for them: an event whose name is not a string, a binary packet that
announces more than 10 attachments, a text message where an attachment is due. enricher
refuses them at its door, so that they never reach the backend (in shared mode one such
packet closed the connection every browser shares), and bounds what one binary packet may
bring in all: its attachments together at most the payload limit, as each message is
(else a browser could make enricher, or the backend, hold ten times that per socket).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from . import packets

MAX_ATTACHMENTS = 10  # socket.io-parser's default maxAttachments


class Verdict(Enum):
    PASS = "pass"  # send it on
    DROP = "drop"  # part of what was refused already, or of a connection being closed


@dataclass(frozen=True, slots=True)
class Refusal:
    """A message not sent on: why, and what its browser is told."""

    reason: str  # the log line's and metric's reason, the error ack's ``error``
    event: str  # the event's name, "other" when it has none
    namespace: str = "/"
    ack_id: int | None = None  # the browser asked for an ack: it gets the error in it
    close: bool = False  # its connection is closed (as a Node server closes it)


@dataclass(slots=True)
class _Binary:
    """A binary packet whose attachments are still coming."""

    event: str
    namespace: str
    ack_id: int | None
    due: int  # attachments still to come
    size: int  # bytes so far, its text included
    refused: bool


class ClientPackets:
    """The checks, with what each browser connection has in progress (by its id)."""

    def __init__(self, max_bytes: int, max_attachments: int = MAX_ATTACHMENTS) -> None:
        self._max_bytes = max_bytes
        self._max_attachments = max_attachments
        self._binary: dict[str, _Binary] = {}
        self._closing: set[str] = set()  # refused with close: nothing more is read

    def check(self, connection: str, message: object) -> Verdict | Refusal:
        """Any message python-engineio hands over: text, bytes, or what it decoded itself
        from a message that was JSON (``4true``, ``4null``), which is no Socket.IO packet."""
        if isinstance(message, str):
            return self.text(connection, message)
        if isinstance(message, bytes):
            return self.binary(connection, len(message))
        return self._closes(connection, Refusal("not_a_packet", "other"))

    def text(self, connection: str, text: str) -> Verdict | Refusal:
        """A text message."""
        return self._closes(connection, self._text(connection, text))

    def binary(self, connection: str, size: int) -> Verdict | Refusal:
        """A binary message: an attachment of the packet in progress, or not."""
        return self._closes(connection, self._attachment(connection, size))

    def _closes(self, connection: str, verdict: Verdict | Refusal) -> Verdict | Refusal:
        if connection in self._closing:
            return Verdict.DROP
        if isinstance(verdict, Refusal) and verdict.close:
            self._binary.pop(connection, None)
            self._closing.add(connection)
        return verdict

    def _text(self, connection: str, text: str) -> Verdict | Refusal:
        if connection in self._binary:
            pending = self._binary.pop(connection)
            return Refusal("attachment_expected", pending.event, pending.namespace, close=True)
        try:
            header = packets.read_header(text)
        except packets.BadPacket:
            return Refusal("not_a_packet", "other")
        if header.type == packets.CONNECT_ERROR:  # the server's to send, never a client's
            return Refusal("packet_invalid", "other", header.namespace)
        if header.type not in (packets.EVENT, packets.BINARY_EVENT, packets.BINARY_ACK):
            return Verdict.PASS
        name = packets.event_name(text, header) if header.type != packets.BINARY_ACK else "ack"
        event = name if name is not None else "other"
        refusal = None
        if name is None:
            refusal = Refusal("event_invalid", event, header.namespace, header.ack_id)
        if header.type == packets.EVENT:
            return refusal or Verdict.PASS
        if not 0 < header.attachments <= self._max_attachments:
            reason = "attachments_too_many" if header.attachments else "packet_invalid"
            return Refusal(reason, event, header.namespace, header.ack_id, close=True)
        self._binary[connection] = _Binary(
            event,
            header.namespace,
            header.ack_id,
            header.attachments,
            len(text),
            refused=refusal is not None,
        )
        return refusal or Verdict.PASS

    def _attachment(self, connection: str, size: int) -> Verdict | Refusal:
        pending = self._binary.get(connection)
        if pending is None:
            return Refusal("attachment_unexpected", "other")
        pending.due -= 1
        pending.size += size
        if pending.due == 0:
            del self._binary[connection]
        if pending.size > self._max_bytes:
            return Refusal(
                "attachments_too_large",
                pending.event,
                pending.namespace,
                None if pending.refused else pending.ack_id,
                close=True,
            )
        return Verdict.DROP if pending.refused else Verdict.PASS

    def refused(self, connection: str) -> None:
        """The binary packet just let through was refused after all (by another check):
        its attachments are dropped."""
        pending = self._binary.get(connection)
        if pending is not None:
            pending.refused = True

    def forget(self, connection: str) -> None:
        """The connection is gone."""
        self._binary.pop(connection, None)
        self._closing.discard(connection)

    def __len__(self) -> int:
        """Connections something is kept for."""
        return len(self._binary.keys() | self._closing)
