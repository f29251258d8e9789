"""Connection state recovery across replicas: one sequence of events, in Redis.

Every replica receives every backend event on its own upstream connection, so each would
number its broadcasts its own way and a browser's offset would mean nothing to another
replica. With ``recovery.store: redis`` the replicas share one sequence instead, the way
socket.io's Redis Streams adapter does: each replica appends what it would broadcast to
one Redis stream, and delivers to its browsers what it reads back from it, in stream order,
stamped with the entry's number. An event another replica appended already (the same
identity: a room's snapshot by its room id, a message by its id, anything else by its
content and its place among equal ones) is not appended twice: the script answers with
its number. Sessions of browsers that went away are kept in Redis too, so a browser cut
from one replica (a network blip, a rolling update) recovers at any other.

Redis is not on the way of an event to its browsers when it is down: the replica then
delivers its own copies directly, unnumbered, and browsers connected meanwhile cannot
recover; when Redis is back a gap is appended, so that nobody is replayed across it as if
nothing had been missed.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as redis
import structlog
from redis.exceptions import RedisError

from .join import NEW_MESSAGE, NEW_ROOM, ROOM_MESSAGE, SNAPSHOT
from .recovery import Session, Stored

log = structlog.get_logger()

# One hash tag for every key: a Redis Cluster keeps them in one slot (scripts need that).
TAG = "{enricher}"

# KEYS: stream, sequence, dedup key. ARGV: dedup ms (0: no dedup), max length, fields...
# Answers the entry's number.
APPEND = """
if ARGV[1] ~= '0' then
  local known = redis.call('GET', KEYS[3])
  if known then return tonumber(known) end
end
local number = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], number .. '-1', unpack(ARGV, 3))
if ARGV[1] ~= '0' then redis.call('SET', KEYS[3], number, 'PX', ARGV[1]) end
return number
"""

# KEYS: the session. ARGV: its holder. The session's fields, taken, if it is the holder's.
TAKE = """
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return false end
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return fields
"""

# How long equal events (no id) of two replicas count as the same one, in ms.
CONTENT_WINDOW_MS = 5_000


def identity(event: str, data: Sequence[Any]) -> str | None:
    """What makes one replica's broadcast the same event as another's, when the content
    alone may not: a room's snapshot is one per room (replicas may build it from different
    answers), a message one per id. None: the content tells."""
    payload = data[0] if data else None
    if not isinstance(payload, dict):
        return None
    if event in (SNAPSHOT, NEW_ROOM):
        key = payload.get("room_id")
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


@dataclass(slots=True)
class _Pending:
    packet: str | None
    rooms: Sequence[str] | None
    skip: Sequence[str]
    attachments: Sequence[bytes]
    dedup: str | None  # the dedup key; None: appended whatever is there

    def entry(self, number: int) -> Entry:
        return Entry(
            number,
            self.packet,
            None if self.rooms is None else tuple(self.rooms),
            tuple(self.skip),
            tuple(self.attachments),
        )


Deliver = Callable[[Entry], Awaitable[None]]


class SharedLog:
    """The shared sequence and the kept sessions, in Redis at ``url``.

    :meth:`run` appends what :meth:`append` queued and reads the sequence back; it calls
    ``deliver(entry)`` for each entry, in order, and ``direct(entry)`` (number 0) for each
    broadcast made while Redis cannot be reached; ``on_state(up)`` when that changes.
    """

    def __init__(
        self,
        url: str,
        *,
        max_events: int,
        identity_ttl: float,
        session_ttl: float,
        retry: float = 1.0,
    ) -> None:
        # redis-py's own annotations say little of what its commands answer
        self.redis: Any = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)
        self._keys = (f"{TAG}:events", f"{TAG}:sequence")
        self._max_events = max_events
        self._identity_ms = max(1, int(identity_ttl * 1000))
        self._session_ms = max(1, int(session_ttl * 1000))
        self._retry = retry
        self._append: Any = self.redis.register_script(APPEND)
        self._take: Any = self.redis.register_script(TAKE)
        self._pending: asyncio.Queue[_Pending] = asyncio.Queue()
        self._occurrences: dict[str, tuple[int, float]] = {}  # content key: count, last
        self.generation: str | None = None  # the sequence's, once Redis was reached
        self.up = False
        self._position = 0  # the last number delivered
        self._unread: dict[int, _Pending] = {}  # appended here, not read back yet
        self._delivering = asyncio.Lock()
        self._readable = asyncio.Event()

    async def start(self) -> int:
        """Reach Redis: the sequence's generation (created by the first replica), and the
        number of its last entry (where this replica starts reading)."""
        generation = secrets.token_hex(4)
        await self.redis.set(f"{TAG}:generation", generation, nx=True)
        stored = await self.redis.get(f"{TAG}:generation")
        self.generation = stored.decode() if stored is not None else generation
        return int(await self.redis.get(self._keys[1]) or 0)

    async def run(
        self, deliver: Deliver, direct: Deliver, on_state: Callable[[bool], None]
    ) -> None:
        """Forever: append, read back, deliver."""
        await asyncio.gather(
            self._write_forever(deliver, direct, on_state), self._read_forever(deliver)
        )

    # -- appending -------------------------------------------------------------------------

    def append(
        self,
        packet: str,
        rooms: Sequence[str] | None,
        skip: Sequence[str],
        attachments: Sequence[bytes] = (),
        identity: str | None = None,
        unique: bool = False,
    ) -> None:
        """Queue a broadcast for the shared sequence (in the order of the calls).
        ``identity``: what makes it the same event at every replica (None: its content);
        ``unique``: this replica's own (to one of its browsers), never merged."""
        dedup = None if unique else self._dedup_key(packet, rooms, skip, identity)
        self._pending.put_nowait(_Pending(packet, rooms, skip, attachments, dedup))

    def _dedup_key(
        self, packet: str, rooms: Sequence[str] | None, skip: Sequence[str], identity: str | None
    ) -> str:
        what = orjson.dumps([identity or packet, rooms, sorted(skip)])
        digest = hashlib.sha256(what).hexdigest()[:32]
        if identity is not None:
            return f"{TAG}:id:{digest}"
        # Equal content: the n-th within the window at this replica is the n-th at others.
        now = time.monotonic()
        count, last = self._occurrences.get(digest, (0, 0.0))
        count = count + 1 if now - last < CONTENT_WINDOW_MS / 1000 else 1
        self._occurrences[digest] = (count, now)
        if len(self._occurrences) > 10_000:
            cutoff = now - CONTENT_WINDOW_MS / 1000
            self._occurrences = {
                key: seen for key, seen in self._occurrences.items() if seen[1] >= cutoff
            }
        return f"{TAG}:content:{digest}:{count}"

    async def _write_forever(
        self, deliver: Deliver, direct: Deliver, on_state: Callable[[bool], None]
    ) -> None:
        """Append what is queued, in order, many per round trip. While Redis cannot be
        reached, broadcasts go to ``direct``; when it is back, a gap is appended first."""
        while True:
            if not self.up:
                await self._reach(direct, on_state)
            batch = [await self._pending.get()]
            while not self._pending.empty() and len(batch) < 512:
                batch.append(self._pending.get_nowait())
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for item in batch:
                        await self._queue_append(pipe, item)
                    numbers = await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("recovery_store_unavailable", error=repr(exc))
                self.up = False
                self._readable.clear()
                on_state(False)
                async with self._delivering:
                    # Appended, not read back: delivered as they are, in order; what other
                    # replicas appended meanwhile is skipped (this one has its own copies).
                    for number in sorted(self._unread):
                        if number > self._position:
                            self._position = number
                            await deliver(self._unread[number].entry(number))
                    self._unread.clear()
                for item in batch:
                    await direct(item.entry(0))
                continue
            for item, number in zip(batch, numbers, strict=True):
                if number > self._position:
                    self._unread[int(number)] = item

    async def _queue_append(self, pipe: Any, item: _Pending) -> None:
        fields: list[str | bytes] = []
        if item.packet is not None:
            fields += ["p", item.packet]
        if item.rooms is not None:
            fields += ["r", orjson.dumps(list(item.rooms))]
        if item.skip:
            fields += ["s", orjson.dumps(list(item.skip))]
        for index, attachment in enumerate(item.attachments):
            fields += [f"a{index}", attachment]
        if item.packet is None:
            fields = ["gap", "1"]
        ttl = 0
        if item.dedup is not None:
            ttl = CONTENT_WINDOW_MS if ":content:" in item.dedup else self._identity_ms
        await self._append(
            keys=[*self._keys, item.dedup or f"{TAG}:none"],
            args=[ttl, self._max_events, *fields],
            client=pipe,
        )

    async def _reach(self, direct: Deliver, on_state: Callable[[bool], None]) -> None:
        """Until Redis answers, broadcasts go to ``direct``. Then a gap, if events went
        to browsers directly (kept nowhere), and reading from there on."""
        said = False
        while True:
            try:
                position = await self.start()
                if self._position or said:  # not the first time: a gap
                    async with self.redis.pipeline(transaction=False) as pipe:
                        await self._queue_append(pipe, _Pending(None, None, (), (), None))
                        [gap] = await pipe.execute()
                    position = int(gap) - 1
                break
            except (RedisError, OSError) as exc:
                if not said and not self._position:
                    log.warning("recovery_store_unavailable", error=repr(exc))
                    on_state(False)
                said = True
            try:
                async with asyncio.timeout(self._retry):
                    while True:
                        await direct((await self._pending.get()).entry(0))
            except TimeoutError:
                pass
        self._position = position
        self._unread.clear()
        self.up = True
        self._readable.set()
        log.info("recovery_store_available", generation=self.generation, position=position)
        on_state(True)

    # -- reading ---------------------------------------------------------------------------

    async def _read_forever(self, deliver: Deliver) -> None:
        """Deliver every entry after the position, in order."""
        while True:
            await self._readable.wait()
            try:
                answer = await self.redis.xread(
                    {self._keys[0]: f"{self._position}-1"}, count=512, block=1000
                )
            except (RedisError, OSError):
                await asyncio.sleep(self._retry)  # the writer notices and says so
                continue
            for _, entries in answer or ():
                async with self._delivering:
                    for entry_id, fields in entries:
                        entry = _entry(entry_id, fields)
                        self._unread.pop(entry.number, None)
                        if entry.number <= self._position or not self.up:
                            continue
                        self._position = entry.number
                        await deliver(entry)

    @property
    def position(self) -> int:
        """The number of the last entry delivered here."""
        return self._position

    async def fetch(self, after: int, through: int) -> list[Entry]:
        """The entries numbered ``after + 1`` to ``through`` still in the stream."""
        entries = await self.redis.xrange(self._keys[0], f"{after + 1}-1", f"{through}-1")
        return [_entry(entry_id, fields) for entry_id, fields in entries]

    # -- sessions --------------------------------------------------------------------------

    async def keep(self, session: Session) -> None:
        key = f"{TAG}:session:{session.pid}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "sid": session.sid,
                    "rooms": orjson.dumps(sorted(session.rooms)),
                    "since": session.since,
                    "holder": session.holder or "",
                },
            )
            pipe.pexpire(key, self._session_ms)
            await pipe.execute()

    async def take(self, pid: str, holder: str | None, now: float) -> Session | None:
        """The session kept for ``pid`` if it is ``holder``'s, taken (once); None if there
        is none (never kept, expired, taken, or another holder's)."""
        fields = await self._take(keys=[f"{TAG}:session:{pid}"], args=[holder or ""])
        if not fields:
            return None
        found = dict(zip(fields[::2], fields[1::2], strict=True))
        return Session(
            sid=found[b"sid"].decode(),
            pid=pid,
            rooms=frozenset(orjson.loads(found[b"rooms"])),
            since=int(found[b"since"]),
            left_at=now,  # still kept: Redis forgets it when it expires
            holder=found[b"holder"].decode() or None,
        )

    async def kept(self, pids: Iterable[str]) -> set[str]:
        """Which of these sessions are still kept (not taken, not expired)."""
        pids = list(pids)
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in pids:
                pipe.exists(f"{TAG}:session:{pid}")
            answers = await pipe.execute()
        return {pid for pid, exists in zip(pids, answers, strict=True) if exists}

    async def close(self) -> None:
        await self.redis.aclose()


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    """An entry as read from the stream."""
    packet = fields.get(b"p")
    rooms = fields.get(b"r")
    skip = fields.get(b"s")
    attachments: list[bytes] = []
    while (attachment := fields.get(b"a%d" % len(attachments))) is not None:
        attachments.append(attachment)
    return Entry(
        int(entry_id.split(b"-")[0]),
        None if packet is None else packet.decode(),
        None if rooms is None else tuple(orjson.loads(rooms)),
        () if skip is None else tuple(orjson.loads(skip)),
        tuple(attachments),
    )


def stored(entry: Entry, epoch: str) -> Stored:
    """An entry fetched from the stream, as the recovery buffer keeps it."""
    packet = None if entry.packet is None else f'{entry.packet[:-1]},"{epoch}.{entry.number}"]'
    return Stored(
        entry.number,
        packet,
        None if entry.rooms is None else frozenset(entry.rooms),
        frozenset(entry.skip),
        0.0,
        entry.attachments,
    )
