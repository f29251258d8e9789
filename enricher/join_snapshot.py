"""What a held room's snapshot says, and what it counts.

From the room's ``new_room``, REST's answer and the messages forwarded while it was held,
:func:`compose` works out the snapshot's last message and counts, and what it counted, so
that no later event counts a message again (docs/contract.md's rule). Pure functions and
records; the join (:mod:`.join`) calls them when it sends a room.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from .join_types import PendingRoom
from .payloads import Message, Room

OLDEST = datetime.min.replace(tzinfo=UTC)
NEWEST = datetime.max.replace(tzinfo=UTC)


def same_message(event: Message, rest_last: Message) -> bool:
    """Whether a message event is the one a flat REST answer (no id) describes."""
    return (
        event.created_at is not None
        and event.created_at == rest_last.created_at
        and rest_last.content_text in (None, event.content_text)
    )


def latest(rest_last: Message | None, unseen_by_rest: list[Message]) -> Message | None:
    """The room's latest message: REST's, or a forwarded one REST did not show yet."""
    # REST's latest without a usable time is the oldest view; an event without one, the newest.
    candidates = [(rest_last.created_at or OLDEST, -1, rest_last)] if rest_last else []
    candidates += [(m.created_at or NEWEST, i, m) for i, m in enumerate(unseen_by_rest)]
    return max(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None


def is_rest_last(message: Message, rest_last: Message) -> bool:
    """Whether a message event is the one REST named as the room's latest."""
    if rest_last.id is not None:
        return message.id == rest_last.id
    return same_message(message, rest_last)


@dataclass(slots=True)
class RestView:
    """What one REST answer counted, told apart from newer messages as their events come.

    REST counts the messages saved before it answered, ``last`` the latest of them. A
    room's events arrive in the order its messages were saved, so an event with the same
    time as ``last`` was counted if it comes before ``last``'s own event, and only while
    REST's count leaves room for it.
    """

    last: Message | None
    uncounted: int | None  # counted by REST, event not come yet; None when REST gave no count
    last_arrived: bool = False

    @classmethod
    def of(cls, rest: Room | None) -> RestView:
        if rest is None:
            return cls(None, None)
        return cls(rest.last_message, rest.message_count)

    def shows(self, message: Message) -> bool:
        """Whether REST counted ``message``; call once per message, in arrival order."""
        last = self.last
        if last is None:
            return False
        if is_rest_last(message, last):
            self.last_arrived = True
            return self._take()
        if message.created_at is None or last.created_at is None:
            return False
        if message.created_at < last.created_at:
            return self._take()
        tie_fits = self.uncounted is None or self.uncounted > 1
        if message.created_at == last.created_at and not self.last_arrived and tie_fits:
            return self._take()
        return False

    def _take(self) -> bool:
        if self.uncounted is not None:
            self.uncounted = max(0, self.uncounted - 1)
        return True


@dataclass(slots=True)
class SnapshotSent:
    """What a sent snapshot counted, so that no later event counts it again."""

    counted_ids: frozenset[str]
    rest: RestView

    def counts(self, message: Message) -> bool:
        shown_by_rest = self.rest.shows(message)  # first: it notes REST's latest arriving
        return shown_by_rest or (message.id is not None and message.id in self.counted_ids)


@dataclass(frozen=True, slots=True)
class Composed:
    """A snapshot's last message and counts, what it counted, and where its last message
    came from (``rest``, ``message``, ``rest+message``; None without one)."""

    last: Message | None
    unread_count: int
    message_count: int
    sent: SnapshotSent
    source: str | None


def known(pending: PendingRoom) -> bool:
    """REST has answered, and the room's latest message is known."""
    rest = pending.rest_room
    return rest is not None and (rest.last_message is not None or bool(pending.forwarded))


def why_partial(pending: PendingRoom) -> str:
    """Why a room sent now would be partial."""
    if pending.rest_room is not None:
        return "no_message"
    if pending.rest_failure is not None:
        return pending.rest_failure
    return "rest_pending"


def compose(pending: PendingRoom) -> Composed:
    """The snapshot of ``pending`` as of now: REST's view plus the forwarded messages REST
    did not show yet."""
    rest = pending.rest_room
    rest_last = rest.last_message if rest else None
    view = RestView.of(rest)
    unseen_by_rest = [m for m in pending.forwarded if not view.shows(m)]
    if rest is not None:
        rest_count = rest.message_count if rest.message_count is not None else int(bool(rest_last))
        rest_unread = rest.unread_count if rest.unread_count is not None else rest_count
    else:
        rest_count = pending.room.message_count or 0
        rest_unread = pending.room.unread_count or 0
    if rest is not None and rest_last is None:
        # REST names no last message, so none of the forwarded ones is known to be in
        # its counts; if the counts say there are messages all the same (a last message
        # of the wrong type, say), the forwarded ones may be among them: never count a
        # message twice.
        rest_count = max(0, rest_count - len(unseen_by_rest))
        rest_unread = max(0, rest_unread - len(unseen_by_rest))
    last = latest(rest_last, unseen_by_rest)
    if last is not None and last is rest_last and last.id is None:
        # the forwarded event of the message REST describes has its id and sender
        last = next((m for m in pending.forwarded if is_rest_last(m, last)), last)
    counted = {m.id for m in pending.forwarded if m.id is not None}
    if rest_last is not None and rest_last.id is not None:
        counted.add(rest_last.id)
    if last is None:
        source = None
    elif rest_last is None:
        source = "message"
    else:
        source = "rest+message" if unseen_by_rest else "rest"
    return Composed(
        last=last,
        unread_count=rest_unread + len(unseen_by_rest),
        message_count=max(rest_count + len(unseen_by_rest), int(last is not None)),
        sent=SnapshotSent(frozenset(counted), view),
        source=source,
    )
