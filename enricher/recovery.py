"""Socket.IO connection state recovery, the rules without the I/O.

socket.io-client (4.6 and later) keeps the ``pid`` its server gave it at connect and the
offset of the last event it received: the last argument of each event, a string the
server appends. When its connection drops and comes back, it presents both; a server that
still has the session answers with the same ``sid`` and ``pid`` after sending every event
the browser missed, in order, each once. This module keeps the sessions of browsers that
went away and the events sent recently, and decides what a returning browser gets; the
browsers' side (``downstream.py``) stamps the packets and carries the decisions out.

Offsets are ``<epoch>.<n>``: ``epoch`` is this process's (or, with the events shared by
replicas through Redis, the shared sequence's), so an offset from a process that is gone is
not mistaken for one of ours; ``n`` counts events. Knowing which numbers were
dropped, recovery can tell a browser that missed nothing (idle for longer than the buffer
keeps events) from one that missed events that are gone.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Session:
    """A browser that went away and may come back: its ids, its rooms (``None``-free; its
    own sid among them), and where its events started."""

    sid: str
    pid: str
    rooms: frozenset[str]
    since: int  # the last event number before it connected
    left_at: float
    holder: str | None = None  # who it belongs to (the token's subject, ...); None: anyone


@dataclass(frozen=True, slots=True)
class Stored:
    """An event kept for browsers that may come back."""

    number: int
    # the socket.io packet as sent, offset included; None: a gap (events that were sent
    # and are kept nowhere: a browser away across it cannot recover)
    packet: str | None
    rooms: frozenset[str] | None  # None: every browser
    skip: frozenset[str]  # sids it was not sent to
    at: float
    attachments: tuple[bytes, ...] = ()  # a binary event's, after its text


@dataclass(frozen=True, slots=True)
class Recovered:
    """A session given back: the packets to send before the CONNECT answer, in order."""

    session: Session
    missed: list[str]
    # each missed packet's binary attachments (none for a text one), sent right after it
    attachments: list[tuple[bytes, ...]] = field(default_factory=list)

    def packets(self) -> list[tuple[str, tuple[bytes, ...]]]:
        """Each missed packet with its attachments."""
        attachments = self.attachments or [()] * len(self.missed)
        return list(zip(self.missed, attachments, strict=True))


@dataclass(frozen=True, slots=True)
class NotRecovered:
    """Why a browser that asked for its session gets a new one."""

    reason: str  # unknown_session, expired, unknown_offset (not yet sent), events_dropped


class Recovery:
    """The sessions of browsers that left and the events of the last ``max_disconnection``
    seconds (at most ``max_events`` of them), with an injected ``clock``."""

    def __init__(
        self,
        max_disconnection: float,
        max_events: int,
        clock: Callable[[], float],
        epoch: str | None = None,
    ) -> None:
        self.max_disconnection = max_disconnection
        self.epoch = epoch or secrets.token_hex(4)
        self._clock = clock
        self._events: deque[Stored] = deque()
        self._max_events = max_events
        self._last = 0  # the number of the last event stamped
        self._dropped_through = 0  # every event up to this number is gone
        self.sessions: dict[str, Session] = {}

    @property
    def last(self) -> int:
        """The number of the last event stamped (where a browser connecting now starts)."""
        return self._last

    def now(self) -> float:
        return self._clock()

    def new_pid(self) -> str:
        return secrets.token_urlsafe(12)

    def stamp(
        self,
        packet: str,
        rooms: Iterable[str] | None = None,
        skip: Iterable[str] = (),
        attachments: Iterable[bytes] = (),
    ) -> str:
        """``packet`` (a socket.io EVENT packet as text, ``2[...]``) with its offset as its
        last argument; stored for browsers that may come back. ``rooms``: the rooms it
        goes to (``None``: everyone); ``skip``: sids it does not go to; ``attachments``:
        a binary event's (``5N-[...]``), kept to be sent again after it."""
        if not packet.endswith("]"):
            raise ValueError("not an event packet")
        stamped = self.record(self._last + 1, packet, rooms, skip, attachments)
        assert stamped is not None
        return stamped

    def record(
        self,
        number: int,
        packet: str | None,
        rooms: Iterable[str] | None = None,
        skip: Iterable[str] = (),
        attachments: Iterable[bytes] = (),
    ) -> str | None:
        """Like :meth:`stamp`, with the event's number given (events numbered elsewhere,
        in a shared sequence): the packet with its offset, or None when it is kept as a
        gap (``packet`` None, or not an event's arguments). A number that does not follow
        the last one starts the buffer again: what lies between is not here."""
        if number <= self._last:
            raise ValueError(f"event {number} is not after {self._last}")
        if number != self._last + 1:
            self.restart_at(number - 1)
        self._last = number
        now = self._clock()
        stored = self.stored(number, packet, rooms, skip, attachments, now)
        self._events.append(stored)
        self._trim(now)
        return stored.packet

    def stored(
        self,
        number: int,
        packet: str | None,
        rooms: Iterable[str] | None = None,
        skip: Iterable[str] = (),
        attachments: Iterable[bytes] = (),
        at: float = 0.0,
    ) -> Stored:
        """Event ``number`` as this buffer keeps it, stamped with its offset; a gap when
        ``packet`` is None or cannot take an offset (not an event's arguments)."""
        packet = None if packet is None else packet.rstrip()
        stamped = (
            f'{packet[:-1]},"{self.epoch}.{number}"]'
            if packet is not None and packet.endswith("]")
            else None
        )
        return Stored(
            number,
            stamped,
            None if rooms is None else frozenset(rooms),
            frozenset(skip),
            at,
            tuple(attachments),
        )

    def restart_at(self, number: int) -> None:
        """The next event is ``number + 1``; the events up to ``number`` are not kept here
        (they may be elsewhere: see :meth:`older`)."""
        self._events.clear()
        self._last = self._dropped_through = number

    def leave(
        self, sid: str, pid: str, rooms: Iterable[str], since: int, holder: str | None = None
    ) -> None:
        """A browser's connection was lost (not closed on purpose): keep its session.
        ``holder``: whose it is; only the same holder gets it back."""
        now = self._clock()
        self.sessions[pid] = Session(sid, pid, frozenset(rooms), since, now, holder)
        self._trim(now)

    def forget(self, pid: str) -> Session | None:
        return self.sessions.pop(pid, None)

    def restore(
        self, pid: object, offset: object, holder: str | None = None
    ) -> Recovered | NotRecovered:
        """What a browser presenting ``pid`` and ``offset`` (and admitted as ``holder``)
        gets. The session is taken: it can be given back once. Another holder's session
        is not even taken: to that browser it does not exist."""
        self._trim(self._clock())
        session = self.sessions.get(pid) if isinstance(pid, str) else None
        if session is None or session.holder != holder:
            return NotRecovered("unknown_session")
        del self.sessions[session.pid]
        return self.restore_session(session, offset)

    def older(self, session: Session, offset: object) -> tuple[int, int] | None:
        """The numbers ``(after, through]`` a returning browser may have missed that are
        older than this buffer (kept elsewhere, in a shared store), or None."""
        seen = self._seen(session, offset)
        if seen is None or seen >= self._dropped_through:
            return None
        return seen, self._dropped_through

    def restore_session(
        self, session: Session, offset: object, older: Iterable[Stored] = ()
    ) -> Recovered | NotRecovered:
        """What a browser presenting ``offset`` gets of ``session`` (taken already):
        the events it missed from this buffer, after ``older`` ones (those of
        :meth:`older`, from elsewhere)."""
        now = self._clock()
        self._trim(now)
        if now - session.left_at > self.max_disconnection:
            return NotRecovered("expired")
        seen = self._seen(session, offset)
        if seen is None:
            return NotRecovered("unknown_offset")
        if seen < self._dropped_through:  # the older ones must all be there
            numbers = [stored.number for stored in older]
            if numbers != list(range(seen + 1, self._dropped_through + 1)):
                return NotRecovered("events_dropped")  # some it missed are gone
        candidates = [*older, *self._events]
        if any(stored.packet is None and stored.number > seen for stored in candidates):
            return NotRecovered("events_dropped")  # sent while kept nowhere
        replay = [
            stored for stored in candidates if stored.number > seen and _reaches(stored, session)
        ]
        return Recovered(
            session,
            [stored.packet for stored in replay if stored.packet is not None],
            [stored.attachments for stored in replay]
            if any(stored.attachments for stored in replay)
            else [],
        )

    def expired(self) -> list[Session]:
        """Sessions past ``max_disconnection``, removed: their rooms can be let go."""
        now = self._clock()
        gone = [s for s in self.sessions.values() if now - s.left_at > self.max_disconnection]
        for session in gone:
            del self.sessions[session.pid]
        self._trim(now)
        return gone

    def sizes(self) -> dict[str, int]:
        return {"recovery_sessions": len(self.sessions), "recovery_events": len(self._events)}

    def _seen(self, session: Session, offset: object) -> int | None:
        """The last event number the browser had (None: one not sent yet). An offset that
        is not one of this session's (none, another process's, or one of an earlier
        session of the same browser) means it got none of its events."""
        number = self._number(offset)
        if number is not None and number > self._last:
            return None
        return session.since if number is None else max(number, session.since)

    def _number(self, offset: object) -> int | None:
        """The event number of one of this process's offsets, else None."""
        if not isinstance(offset, str):
            return None
        epoch, _, number = offset.partition(".")
        if (
            epoch != self.epoch
            or not number.isascii()
            or not number.isdigit()
            or len(number) > 19  # not a count of events (and int() refuses 4,300 digits)
        ):
            return None
        return int(number)

    def _trim(self, now: float) -> None:
        events = self._events
        while events and (
            len(events) > self._max_events or now - events[0].at > self.max_disconnection
        ):
            self._dropped_through = events.popleft().number


def _reaches(stored: Stored, session: Session) -> bool:
    if session.sid in stored.skip:
        return False
    return stored.rooms is None or not stored.rooms.isdisjoint(session.rooms)


class SentLog:
    """What was sent to one browser lately (transparent mode), numbered from 1, so that it
    gets what it missed when it comes back after a blip. Messages are kept as they came
    (one string for every browser that got the same), their offsets given when written.

    While the browser is connected only the last ``window`` seconds are kept: a connection
    that broke is noticed within the heartbeat (ping interval and timeout), so what was
    written to it earlier had arrived. While it is away everything is kept, up to
    ``limit`` messages; past that it cannot recover (:attr:`overflowed`).
    """

    def __init__(self, window: float, limit: int) -> None:
        self._window = window
        self._limit = limit
        self._messages: deque[str | bytes] = deque()
        self._first = 1  # the number of _messages[0]
        self._marks: deque[tuple[float, int]] = deque()  # (when, first number sent then)
        self.overflowed = False

    @property
    def last(self) -> int:
        """The number of the latest message (0: none yet)."""
        return self._first + len(self._messages) - 1

    def add(self, message: str | bytes, now: float, away: bool) -> int:
        """Keep a message sent (or, ``away``, to be sent on the browser's return); its number."""
        messages = self._messages
        if away and len(messages) >= self._limit:
            self.overflowed = True
        if self.overflowed:  # numbers go on, nothing is kept
            self._first += len(messages) + 1
            messages.clear()
            self._marks.clear()
            return self._first - 1
        if not self._marks or now - self._marks[-1][0] >= 1.0:
            if not away:
                self._trim(now)  # a second at a time
            self._marks.append((now, self._first + len(messages)))
        messages.append(message)
        if not away and len(messages) > self._limit:
            messages.popleft()
            self._first += 1
        return self._first + len(messages) - 1

    def _trim(self, now: float) -> None:
        """Forget what was sent more than ``window`` seconds ago."""
        oldest = now - self._window
        marks = self._marks
        while marks and marks[0][0] <= oldest:
            marks.popleft()
        keep_from = marks[0][1] if marks else self._first + len(self._messages)
        while self._first < keep_from and self._messages:
            self._messages.popleft()
            self._first += 1

    def after(self, number: int) -> list[str | bytes] | None:
        """Every message after ``number``, in order; None when some are no longer kept."""
        if self.overflowed or number + 1 < self._first or number > self.last:
            return None
        return list(self._messages)[number + 1 - self._first :]

    def __len__(self) -> int:
        return len(self._messages)
