"""Socket.IO connection state recovery, the rules without the I/O.

socket.io-client (4.6 and later) keeps the ``pid`` its server gave it at connect and the
offset of the last event it received: the last argument of each event, a string the
server appends. When its connection drops and comes back, it presents both; a server that
still has the session answers with the same ``sid`` and ``pid`` after sending every event
the browser missed, in order, each once. This module keeps the sessions of browsers that
went away and the events sent recently, and decides what a returning browser gets; the
browsers' side (``downstream.py``) stamps the packets and carries the decisions out.

Offsets are ``<epoch>.<n>``: ``epoch`` is this process's, so an offset from a process that
is gone is not mistaken for one of ours; ``n`` counts events. Knowing which numbers were
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
class _Stored:
    number: int
    packet: str  # the socket.io packet as sent, offset included
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
        self._events: deque[_Stored] = deque()
        self._max_events = max_events
        self._last = 0  # the number of the last event stamped
        self._dropped_through = 0  # every event up to this number is gone
        self.sessions: dict[str, Session] = {}

    @property
    def last(self) -> int:
        """The number of the last event stamped (where a browser connecting now starts)."""
        return self._last

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
        self._last += 1
        offset = f"{self.epoch}.{self._last}"
        stamped = f'{packet[:-1]},"{offset}"]'
        now = self._clock()
        self._events.append(
            _Stored(
                self._last,
                stamped,
                None if rooms is None else frozenset(rooms),
                frozenset(skip),
                now,
                tuple(attachments),
            )
        )
        self._trim(now)
        return stamped

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
        now = self._clock()
        self._trim(now)
        session = self.sessions.get(pid) if isinstance(pid, str) else None
        if session is None or session.holder != holder:
            return NotRecovered("unknown_session")
        del self.sessions[session.pid]
        if now - session.left_at > self.max_disconnection:
            return NotRecovered("expired")
        number = self._number(offset)
        if number is not None and number > self._last:
            return NotRecovered("unknown_offset")
        # An offset that is not one of this session's (none, another process's, or one
        # of an earlier session of the same browser) means it got none of its events.
        seen = session.since if number is None else max(number, session.since)
        if seen < self._dropped_through:
            return NotRecovered("events_dropped")  # some it missed are gone
        replay = [
            stored for stored in self._events if stored.number > seen and _reaches(stored, session)
        ]
        return Recovered(
            session,
            [stored.packet for stored in replay],
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


def _reaches(stored: _Stored, session: Session) -> bool:
    if session.sid in stored.skip:
        return False
    return stored.rooms is None or not stored.rooms.isdisjoint(session.rooms)
