"""The sequence replicas share in Redis, against a real redis-server."""

from __future__ import annotations

import asyncio

from enricher.recovery import Session
from enricher.shared import Entry, SharedLog

from ..tools import RedisServer
from .conftest import StubBackend
from .test_access import proxy_for
from .test_recovery import connect

TIMEOUT = 10.0


class Replica:
    """A :class:`SharedLog` running, with what it delivered."""

    def __init__(self, url: str) -> None:
        self.log = SharedLog(url, max_events=1000, identity_ttl=60.0, session_ttl=60.0, retry=0.1)
        self.delivered: asyncio.Queue[Entry] = asyncio.Queue()
        self.direct: asyncio.Queue[Entry] = asyncio.Queue()
        self.states: asyncio.Queue[bool] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Replica:
        self._task = asyncio.create_task(
            self.log.run(self.delivered.put, self.direct.put, self.states.put_nowait)
        )
        assert await asyncio.wait_for(self.states.get(), TIMEOUT) is True
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.log.close()

    async def take(self, queue: asyncio.Queue[Entry], count: int) -> list[Entry]:
        return [await asyncio.wait_for(queue.get(), TIMEOUT) for _ in range(count)]


def broadcast(log: SharedLog, step: int) -> None:
    """What every replica broadcasts for one backend story, in order."""
    log.append(f'2["new_message",{{"id":"m{step}"}}]', None, (), identity=f"new_message:m{step}")
    log.append(f'2["new_room_complete",{{"room_id":"r{step}"}}]', None, (), identity=f"r{step}")
    log.append('2["typing",{}]', ["room:r1"], ())  # no identity: by content


async def test_two_replicas_read_one_sequence_each_event_once(redis_server: RedisServer) -> None:
    async with Replica(redis_server.url) as a, Replica(redis_server.url) as b:
        assert a.log.generation == b.log.generation
        for step in range(3):
            broadcast(a.log, step)
            broadcast(b.log, step)
        b.log.append('2["enricher:resync",{}]', ["sid-b"], (), unique=True)
        a.log.append('51-["file",{"_placeholder":true,"num":0}]', None, (), [b"\x00\xff"])
        got_a = await a.take(a.delivered, 11)
        got_b = await b.take(b.delivered, 11)
        assert got_a == got_b
        assert [entry.number for entry in got_a] == list(range(1, 12))
        packets = [entry.packet for entry in got_a]
        # each story's three events once, in order, whichever replica appended it first
        stories = [p for p in packets if p is not None and "resync" not in p and "file" not in p]
        assert stories == [
            packet
            for step in range(3)
            for packet in (
                f'2["new_message",{{"id":"m{step}"}}]',
                f'2["new_room_complete",{{"room_id":"r{step}"}}]',
                '2["typing",{}]',
            )
        ]
        typing = next(entry for entry in got_a if entry.packet == '2["typing",{}]')
        assert typing.rooms == ("room:r1",) and typing.skip == ()
        [file] = [entry for entry in got_a if entry.attachments]
        assert file.attachments == (b"\x00\xff",)
        assert a.delivered.empty() and b.delivered.empty() and a.direct.empty()

        assert await a.log.fetch(2, 4) == got_a[2:4]


async def test_a_kept_session_is_given_once_and_only_to_its_holder(
    redis_server: RedisServer,
) -> None:
    async with Replica(redis_server.url) as a, Replica(redis_server.url) as b:
        session = Session("sid-1", "pid-1", frozenset({"sid-1", "room:r1"}), 7, 0.0, "sub:ana")
        await a.log.keep(session)
        await a.log.keep(Session("sid-2", "pid-2", frozenset({"sid-2"}), 8, 0.0))
        assert await b.log.take("pid-1", "sub:bob", now=5.0) is None
        assert await a.log.kept(["pid-1", "pid-2", "pid-3"]) == {"pid-1", "pid-2"}
        taken = await b.log.take("pid-1", "sub:ana", now=5.0)
        assert taken == Session("sid-1", "pid-1", session.rooms, 7, 5.0, "sub:ana")
        assert await a.log.take("pid-1", "sub:ana", now=6.0) is None
        assert await b.log.take("pid-2", None, now=6.0) is not None
        assert await a.log.kept(["pid-1", "pid-2"]) == set()


async def test_without_redis_events_go_direct_and_a_gap_follows(
    redis_server: RedisServer,
) -> None:
    async with Replica(redis_server.url) as a:
        a.log.append('2["e",1]', None, ())
        [first] = await a.take(a.delivered, 1)
        redis_server.stop()
        a.log.append('2["e",2]', None, ())
        a.log.append('2["e",3]', ["room:r1"], ["sid-x"])
        assert await asyncio.wait_for(a.states.get(), TIMEOUT) is False
        direct = await a.take(a.direct, 2)
        assert [(e.number, e.packet, e.rooms, e.skip) for e in direct] == [
            (0, '2["e",2]', None, ()),
            (0, '2["e",3]', ("room:r1",), ("sid-x",)),
        ]
        redis_server.start()  # empty: a new generation
        assert await asyncio.wait_for(a.states.get(), TIMEOUT) is True
        a.log.append('2["e",4]', None, ())
        gap, after = await a.take(a.delivered, 2)
        assert gap.packet is None and after.packet == '2["e",4]'
        assert after.number == gap.number + 1
        assert first.number == 1 and a.delivered.empty()


async def test_a_browser_cut_from_one_replica_recovers_at_the_other(
    backend: StubBackend, redis_server: RedisServer
) -> None:
    shared = {"recovery.store": "redis", "recovery.redis_url": redis_server.url}
    async with proxy_for(backend, **shared) as a, proxy_for(backend, **shared) as b:
        browser = await connect(a, None)
        assert await browser.sio.call("room:join", {"room_id": "r0"}) == {
            "ok": True,
            "room_id": "r0",
        }
        assert await backend.client_events.get() == ("room:join", ({"room_id": "r0"},))
        await backend.new_customer("r0", "628111", "Ana", "hello")
        before = [await browser.next() for _ in range(4)]
        assert sorted(event for event, _ in before) == [
            "new_message",
            "new_room",
            "new_room_complete",
            "room:new_message",
        ]
        seen, sid = browser.offsets[-1], browser.sio.get_sid()
        assert a.downstream.shared is not None
        kept = asyncio.Event()
        keep = a.downstream.shared.keep

        async def keeping(session: Session) -> None:
            await keep(session)
            kept.set()

        a.downstream.shared.keep = keeping  # type: ignore[method-assign]
        pid = a.downstream.sio.pids[sid][0]
        await browser.sio.eio.disconnect(abort=True)  # a network loss
        await asyncio.wait_for(kept.wait(), TIMEOUT)

        other = await connect(b, None)
        away = await backend.message("r0", "while away")  # to room r0: only a is in it
        await backend.sio.emit("test:barrier", 1)
        await other.next("test:barrier")
        back = await connect(b, {"pid": pid, "offset": seen})
        assert back.sio.get_sid() == sid
        assert [await back.next() for _ in range(3)] == [
            ("room:new_message", (away,)),
            ("new_message", (away,)),
            ("test:barrier", (1,)),
        ]
        # b joined the backend room for it, and a lets go of it once it sees it given back
        assert await backend.client_events.get() == ("room:join", ({"room_id": "r0"},))
        await a.downstream._sweep_shared(a.downstream.shared)
        assert await backend.client_events.get() == ("room:leave", ({"room_id": "r0"},))
        after = await backend.message("r0", "after")
        assert [await back.next() for _ in range(2)] == [
            ("room:new_message", (after,)),
            ("new_message", (after,)),
        ]
        numbers = [int(offset.partition(".")[2]) for offset in [seen, *back.offsets]]
        assert numbers == sorted(set(numbers))
        assert back.events.empty()
        await back.sio.disconnect()
        await other.sio.disconnect()
        metrics = b.metrics.registry.get_sample_value
        assert metrics("enricher_recoveries_total", {"outcome": "recovered"}) == 1
