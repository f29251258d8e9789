"""Connection state recovery across replicas: one sequence of events, in Redis.

Every replica receives every backend event on its own upstream connection, so each would
number its broadcasts its own way and a browser's offset would mean nothing to another
replica. With ``recovery.store: redis`` the replicas share one sequence instead, the way
socket.io's Redis Streams adapter does: each replica appends what it would broadcast to
one Redis stream, and delivers to its browsers what it reads back from it, in stream order,
stamped with the entry's number. An event another replica appended already is not
appended twice: the script answers with its number. Two replicas' copies are one event
when they have the same identity (a room's snapshot by its room id, a message by its id),
or else the same content, appended within :data:`CONTENT_WINDOW_MS` of each other: each
replica's n-th copy claims the oldest entry of that content it has not claimed yet.
Sessions of browsers that went away are kept in Redis too, so a browser cut from one
replica (a network blip, a rolling update) recovers at any other.

Redis is not on the way of an event to its browsers when it is slow or down: past
:data:`APPEND_TIMEOUT` the replica delivers its own copies directly, unnumbered, and when
Redis answers again it appends a gap (if anything went out directly), so that nobody is
replayed across it as if nothing had been missed. A sequence that went back (Redis flushed,
restored from an older snapshot) is noticed by its generation and started anew.

What an entry holds, and its fields in the stream, is in enricher/shared_entries.py. An
entry that cannot be read (written by hand, by another program, or damaged) is a gap too.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import orjson
import redis.asyncio as redis
import structlog
from redis.exceptions import RedisError

from .recovery import Session
from .shared_entries import Entry, MalformedEntry, Pending, read_entry

log = structlog.get_logger()

# What a failing store raises (the connection lost, refused, timed out): caught as one.
STORE_ERRORS = (RedisError, OSError, TimeoutError)

# One hash tag for every key: a Redis Cluster keeps them in one slot (scripts need that).
TAG = "{enricher}"

# KEYS: stream, sequence, generation, dedup key.
# ARGV: generation, kind (none, id, content), dedup ms, max length, replica, floor, the
# replica's position, fields...
# Answers the entry's number; an error if the sequence is not of that generation (Redis
# lost it: flushed), or if it is behind what the replica read (Redis restored from an
# older snapshot, which holds the same generation: numbers would be given twice).
APPEND = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return redis.error_reply('GENERATION') end
local kind, ttl = ARGV[2], tonumber(ARGV[3])
local now
if kind == 'id' then
  local known = redis.call('GET', KEYS[4])
  if known then return tonumber(known) end
elseif kind == 'content' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local entries = redis.call('HGETALL', KEYS[4])
  local oldest, claimed
  for i = 1, #entries, 2 do
    local number, value = tonumber(entries[i]), entries[i + 1]
    local bar = string.find(value, '|', 1, true)
    local at, who = tonumber(string.sub(value, 1, bar - 1)), string.sub(value, bar + 1)
    if now - at > ttl then
      redis.call('HDEL', KEYS[4], entries[i])
    elseif number > tonumber(ARGV[6])
        and not string.find(',' .. who .. ',', ',' .. ARGV[5] .. ',', 1, true)
        and (oldest == nil or number < oldest) then
      oldest, claimed = number, value
    end
  end
  if oldest then
    redis.call('HSET', KEYS[4], oldest, claimed .. ',' .. ARGV[5])
    return oldest
  end
end
if tonumber(redis.call('GET', KEYS[2]) or 0) < tonumber(ARGV[7]) then
  return redis.error_reply('WENT_BACK')
end
local number = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], number .. '-1', unpack(ARGV, 8))
if kind == 'id' then
  redis.call('SET', KEYS[4], number, 'PX', ttl)
elseif kind == 'content' then
  redis.call('HSET', KEYS[4], number, now .. '|' .. ARGV[5])
  redis.call('PEXPIRE', KEYS[4], ttl)
end
return number
"""

# KEYS: the session. ARGV: its holder, the generation. The session's fields, taken, if it
# is the holder's and of this generation of the sequence.
TAKE = """
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1]
    or redis.call('HGET', KEYS[1], 'generation') ~= ARGV[2] then
  return false
end
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return fields
"""

# How far apart two replicas' copies of one event without an identity may be appended.
CONTENT_WINDOW_MS = 2_000
# Longest wait for Redis on the way of an event; past it, events go to browsers directly.
APPEND_TIMEOUT = 0.5
# Longest wait for a session to be kept or taken (a browser's connect waits on it).
SESSION_TIMEOUT = 1.0
# How often a replica says it is alive, and after how long without it is taken for gone.
HEARTBEAT = 2.0
ALIVE = 6.0


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
        self.replica = secrets.token_hex(4)  # this process, among the replicas
        self._keys = (f"{TAG}:events", f"{TAG}:sequence", f"{TAG}:generation")
        self._max_events = max_events
        self._identity_ms = max(1, int(identity_ttl * 1000))
        self._session_ms = max(1, int(session_ttl * 1000))
        self._retry = retry
        self._append: Any = self.redis.register_script(APPEND)
        self._take: Any = self.redis.register_script(TAKE)
        self._pending: asyncio.Queue[Pending] = asyncio.Queue()
        self.generation: str | None = None  # the sequence's, once Redis was reached
        self.up = False
        self._position = 0  # the last number delivered
        # Content copies claim only entries after this: not those appended before this
        # replica could have seen their event (it started, or its backend connection came
        # back, later).
        self._floor = 0
        self._unread: dict[int, Pending] = {}  # appended here, not read back yet
        # While a batch is being appended: the events read back meanwhile that no earlier
        # batch of this replica appended (by dedup key). If the append then times out, it
        # may have gone through all the same: those are not sent to browsers again.
        self._read_meanwhile: Counter[str] | None = None
        self._went_direct = False  # events went to browsers directly since Redis was up
        self._said_down = False
        self._delivering = asyncio.Lock()
        self._readable = asyncio.Event()

    async def start(self) -> int:
        """Reach Redis: the sequence's generation (created by the first replica; created
        anew if the sequence went back behind this replica), and the number of its last
        entry (where this replica reads on from)."""
        async with asyncio.timeout(APPEND_TIMEOUT * 2):
            generation = secrets.token_hex(4)
            await self.redis.set(self._keys[2], generation, nx=True)
            stored = (await self.redis.get(self._keys[2])).decode()
            last = int(await self.redis.get(self._keys[1]) or 0)
            if stored == self.generation and last < self._position:
                # The same generation with fewer entries than were read: Redis came back
                # from an older snapshot. Numbers would be given twice: start anew.
                await self.redis.set(self._keys[2], generation)
                stored = generation
        self.generation = stored
        return last

    async def run(
        self, deliver: Deliver, direct: Deliver, on_state: Callable[[bool], None]
    ) -> None:
        """Forever: append, read back, deliver; say this replica is alive."""
        await asyncio.gather(
            self._write_forever(deliver, direct, on_state),
            self._read_forever(deliver),
            self._heartbeat_forever(),
        )

    def rebase(self) -> None:
        """This replica's backend connection (re)started: its next copies of events without
        an identity are not of those appended before (it did not receive them)."""
        self._floor = self._position

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
        self._pending.put_nowait(
            Pending.of(packet, rooms, skip, attachments, identity=identity, unique=unique, tag=TAG)
        )

    async def _write_forever(
        self, deliver: Deliver, direct: Deliver, on_state: Callable[[bool], None]
    ) -> None:
        """Append what is queued, in order, many per round trip. While Redis cannot be
        reached, broadcasts go to ``direct``."""
        while True:
            if not self.up:
                await self._reach(direct, on_state)
            batch = [await self._pending.get()]
            while not self._pending.empty() and len(batch) < 512:
                batch.append(self._pending.get_nowait())
            self._read_meanwhile = Counter()
            try:
                async with asyncio.timeout(APPEND_TIMEOUT):
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for item in batch:
                            await self._queue_append(pipe, item)
                        numbers = await pipe.execute()
            except STORE_ERRORS as exc:
                self._down(exc, on_state)
                async with self._delivering:
                    read_back, self._read_meanwhile = self._read_meanwhile, None
                    # Appended, not read back: delivered as they are, in order; what other
                    # replicas appended meanwhile is skipped (this one has its own copies).
                    for number in sorted(self._unread):
                        if number > self._position:
                            self._position = number
                            await self._deliver(deliver, self._unread[number].entry(number))
                    self._unread.clear()
                for item in batch:
                    if read_back[item.dedup] > 0:  # appended after all, and delivered
                        read_back[item.dedup] -= 1
                        continue
                    await self._direct(direct, item)
                continue
            self._read_meanwhile = None
            for item, number in zip(batch, numbers, strict=True):
                if number > self._position:
                    self._unread[int(number)] = item

    async def _queue_append(self, pipe: Any, item: Pending) -> None:
        ttl = CONTENT_WINDOW_MS if item.kind == "content" else self._identity_ms
        await self._append(
            keys=[*self._keys, item.dedup],
            args=[
                self.generation,
                item.kind,
                ttl,
                self._max_events,
                self.replica,
                self._floor,
                self._position,
                *item.fields(),
            ],
            client=pipe,
        )

    async def _direct(self, direct: Deliver, item: Pending) -> None:
        self._went_direct = True
        if item.packet is not None:
            await direct(item.entry(0))

    async def _reach(self, direct: Deliver, on_state: Callable[[bool], None]) -> None:
        """Until Redis answers, broadcasts go to ``direct`` (while it is being asked, too).
        Then a gap, if events went to browsers directly (they are kept nowhere), and
        reading on from there."""
        while True:
            attempt = asyncio.ensure_future(self._connect())
            try:
                while not attempt.done():
                    getter = asyncio.ensure_future(self._pending.get())
                    try:
                        await asyncio.wait({attempt, getter}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        getter.cancel()
                    if getter.done() and not getter.cancelled():
                        await self._direct(direct, getter.result())
            finally:
                attempt.cancel()  # stopped meanwhile: its failure is nobody's to report
            try:
                position = attempt.result()
                break
            except STORE_ERRORS as exc:
                self._down(exc, on_state)
            try:
                async with asyncio.timeout(self._retry):
                    while True:
                        await self._direct(direct, await self._pending.get())
            except TimeoutError:
                pass
        # Connections idle in the pool through the outage may be dead without knowing it
        # (a partition closes nothing at this end): the next commands connect anew.
        await self.redis.connection_pool.disconnect(inuse_connections=False)
        self._position = self._floor = position
        self._unread.clear()
        self._went_direct = False
        self.up = True
        self._said_down = False
        self._readable.set()
        log.info("recovery_store_available", generation=self.generation, position=position)
        on_state(True)

    def _down(self, exc: BaseException, on_state: Callable[[bool], None]) -> None:
        """Redis did not answer: said once, until it answers again."""
        self.up = False
        self._readable.clear()
        if not self._said_down:
            self._said_down = True
            log.warning("recovery_store_unavailable", error=repr(exc))
            on_state(False)

    async def _connect(self) -> int:
        """Where to read on from, once Redis answers."""
        generation = self.generation
        last = await self.start()
        if generation != self.generation:  # a sequence of its own: numbers start anew
            return last
        if not self._went_direct:  # nothing was missed: whatever was appended is read
            return self._position
        async with asyncio.timeout(APPEND_TIMEOUT):
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._queue_append(pipe, Pending(None, None, (), (), "none", TAG))
                [gap] = await pipe.execute()
        return int(gap) - 1

    # -- reading ---------------------------------------------------------------------------

    async def _read_forever(self, deliver: Deliver) -> None:
        """Deliver every entry after the position, in order."""
        while True:
            await self._readable.wait()
            try:
                answer = await self.redis.xread(
                    {self._keys[0]: f"{self._position}-1"}, count=512, block=1000
                )
            except STORE_ERRORS:
                await asyncio.sleep(self._retry)  # the writer notices and says so
                continue
            for _, entries in answer or ():
                async with self._delivering:
                    for entry_id, fields in entries:
                        if not self.up:  # the writer delivers what it appended itself
                            break
                        entry = self._read(entry_id, fields)
                        earlier = self._unread.pop(entry.number, None) is not None
                        if entry.number <= self._position:
                            continue
                        if not earlier and entry.key and self._read_meanwhile is not None:
                            self._read_meanwhile[entry.key] += 1
                        self._position = entry.number
                        await self._deliver(deliver, entry)

    @staticmethod
    def _read(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
        """An entry read from the stream. One that cannot be read is a gap: its event
        reaches no browser, nobody is replayed across it, and the entries after it are
        delivered (an error here would stop every replica reading it)."""
        try:
            return read_entry(entry_id, fields)
        except MalformedEntry as exc:
            log.warning("recovery_store_entry_malformed", number=exc.number, reason=exc.reason)
            return Entry(exc.number, None, None, (), ())

    @staticmethod
    async def _deliver(deliver: Deliver, entry: Entry) -> None:
        try:
            await deliver(entry)
        except Exception:  # one entry that cannot be delivered does not stop the others
            log.exception("recovery_store_deliver_failed", number=entry.number)

    @property
    def position(self) -> int:
        """The number of the last entry delivered here."""
        return self._position

    async def fetch(self, after: int, through: int) -> list[Entry]:
        """The entries numbered ``after + 1`` to ``through`` still in the stream."""
        async with asyncio.timeout(SESSION_TIMEOUT):
            entries = await self.redis.xrange(self._keys[0], f"{after + 1}-1", f"{through}-1")
        return [self._read(entry_id, fields) for entry_id, fields in entries]

    # -- replicas --------------------------------------------------------------------------

    async def _heartbeat_forever(self) -> None:
        key = f"{TAG}:replicas"
        while True:
            await self._readable.wait()  # at once when Redis is reached, then every so often
            if self.up:
                try:
                    async with asyncio.timeout(SESSION_TIMEOUT):
                        now = time.time()
                        async with self.redis.pipeline(transaction=False) as pipe:
                            pipe.zadd(key, {self.replica: now})
                            pipe.zremrangebyscore(key, 0, now - 60)
                            await pipe.execute()
                except STORE_ERRORS:
                    pass  # the writer notices and says so
            await asyncio.sleep(HEARTBEAT)

    async def others_alive(self) -> bool:
        """Whether another replica said it was alive lately (False when Redis cannot say)."""
        try:
            async with asyncio.timeout(SESSION_TIMEOUT):
                alive = await self.redis.zrangebyscore(
                    f"{TAG}:replicas", time.time() - ALIVE, "+inf"
                )
        except STORE_ERRORS:
            return False
        return any(replica.decode() != self.replica for replica in alive)

    # -- sessions --------------------------------------------------------------------------

    async def keep(self, session: Session) -> None:
        key = f"{TAG}:session:{session.pid}"
        async with asyncio.timeout(SESSION_TIMEOUT):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    key,
                    mapping={
                        "sid": session.sid,
                        "rooms": orjson.dumps(sorted(session.rooms)),
                        "since": session.since,
                        "holder": session.holder or "",
                        "generation": self.generation or "",
                    },
                )
                pipe.pexpire(key, self._session_ms)
                await pipe.execute()

    async def take(self, pid: str, holder: str | None, now: float) -> Session | None:
        """The session kept for ``pid`` if it is ``holder``'s, taken (once); None if there
        is none (never kept, expired, taken, another holder's, or of numbers gone)."""
        async with asyncio.timeout(SESSION_TIMEOUT):
            fields = await self._take(
                keys=[f"{TAG}:session:{pid}"], args=[holder or "", self.generation or ""]
            )
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
        async with asyncio.timeout(SESSION_TIMEOUT):
            async with self.redis.pipeline(transaction=False) as pipe:
                for pid in pids:
                    pipe.exists(f"{TAG}:session:{pid}")
                answers = await pipe.execute()
        return {pid for pid, exists in zip(pids, answers, strict=True) if exists}

    async def close(self) -> None:
        try:
            async with asyncio.timeout(SESSION_TIMEOUT):
                await self.redis.zrem(f"{TAG}:replicas", self.replica)
        except STORE_ERRORS:
            pass
        await self.redis.aclose()
