"""The sequence replicas share in Redis, against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio.client

from enricher.recovery import Session
from enricher.shared import TAG, Deliver, SharedLog
from enricher.shared_entries import Entry
from enricher.shared_mode import Running

from ..tools import Balancer, RedisServer
from .conftest import StubBackend
from .test_access import proxy_for
from .test_recovery import connect

TIMEOUT = 10.0


def session_kept(proxy: Running) -> asyncio.Event:
    """Set once ``proxy`` has kept a lost browser's session in Redis."""
    shared = proxy.downstream.shared
    assert shared is not None
    kept = asyncio.Event()
    keep = shared.keep

    async def keeping(session: Session) -> None:
        await keep(session)
        kept.set()

    shared.keep = keeping  # type: ignore[method-assign]
    return kept


class Replica:
    """A :class:`SharedLog` running, with what it delivered."""

    def __init__(self, url: str) -> None:
        self.log = SharedLog(url, max_events=1000, identity_ttl=60.0, session_ttl=60.0, retry=0.1)
        self.delivered: asyncio.Queue[Entry] = asyncio.Queue()
        self.direct: asyncio.Queue[Entry] = asyncio.Queue()
        self.states: asyncio.Queue[bool] = asyncio.Queue()
        self.release = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(
        self, expect: bool = True, deliver: Deliver | None = None, direct: Deliver | None = None
    ) -> None:
        self._task = asyncio.create_task(
            self.log.run(
                deliver or self.delivered.put, direct or self.direct.put, self.states.put_nowait
            )
        )
        assert await asyncio.wait_for(self.states.get(), TIMEOUT) is expect

    async def __aenter__(self) -> Replica:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        await self.log.close()

    async def take(
        self, queue: asyncio.Queue[Entry], count: int, timeout: float = TIMEOUT
    ) -> list[Entry]:
        return [await asyncio.wait_for(queue.get(), timeout) for _ in range(count)]


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
    link = Balancer(redis_server.port)  # a's way to Redis: a partition when cut
    url = f"redis://127.0.0.1:{await link.start()}/0"
    async with Replica(url) as a, Replica(redis_server.url) as b:
        generation = a.log.generation
        a.log.append('2["e",1]', None, ())
        [first] = await a.take(a.delivered, 1)
        link.cut()
        a.log.append('2["e",2]', None, ())
        a.log.append('2["e",3]', ["room:r1"], ["sid-x"])
        assert await asyncio.wait_for(a.states.get(), TIMEOUT) is False
        direct = await a.take(a.direct, 2)
        assert [(e.number, e.packet, e.rooms, e.skip) for e in direct] == [
            (0, '2["e",2]', None, ()),
            (0, '2["e",3]', ("room:r1",), ("sid-x",)),
        ]
        link.restore()
        assert await asyncio.wait_for(a.states.get(), TIMEOUT) is True
        a.log.append('2["e",4]', None, ())
        gap, after = await a.take(a.delivered, 2)
        assert gap.packet is None and after.packet == '2["e",4]'
        assert first.number == 1 and after.number == gap.number + 1
        assert a.log.generation == generation and a.delivered.empty() and a.states.empty()
        # the other replica read the same: what went out directly is a gap to it too
        assert [entry.packet for entry in await b.take(b.delivered, 3)] == [
            '2["e",1]',
            None,
            '2["e",4]',
        ]
    await link.close()


async def test_a_replica_that_sent_nothing_directly_leaves_no_gap(
    redis_server: RedisServer,
) -> None:
    link = Balancer(redis_server.port)
    url = f"redis://127.0.0.1:{await link.start()}/0"
    async with Replica(redis_server.url) as b:
        link.cut()
        late = Replica(url)
        await late.start(expect=False)  # starts while Redis cannot be reached
        b.log.append('2["e",1]', None, ())
        link.restore()
        assert await asyncio.wait_for(late.states.get(), TIMEOUT) is True
        b.log.append('2["e",2]', None, ())
        assert [entry.packet for entry in await b.take(b.delivered, 2)] == [
            '2["e",1]',
            '2["e",2]',
        ]
        assert [entry.packet for entry in await late.take(late.delivered, 1)] == ['2["e",2]']
        await late.__aexit__()
    await link.close()


def flush(client: redis.Redis) -> None:
    client.flushall()  # the generation is gone with the rest


def restore_older_snapshot(client: redis.Redis) -> None:
    """As a snapshot taken at 10 entries: the same generation, fewer entries."""
    client.set(f"{TAG}:sequence", 10)
    client.xdel(f"{TAG}:events", *(f"{n}-1" for n in range(11, 21)))
    client.execute_command("XSETID", f"{TAG}:events", "10-1")  # XDEL keeps the last id


@pytest.mark.parametrize(("went_back", "next_number"), [(flush, 1), (restore_older_snapshot, 11)])
async def test_a_sequence_that_went_back_starts_anew_and_nothing_stalls(
    redis_server: RedisServer, went_back: Callable[[redis.Redis], None], next_number: int
) -> None:
    """Redis flushed, or restored from an older snapshot (which holds the generation:
    what it lacks is the latest entries). Appended again, new events would get numbers
    the replica already read, and its browsers would never get them: it starts a new
    sequence instead, and every event reaches browsers once, in order."""
    async with Replica(redis_server.url) as a:
        for n in range(1, 21):
            a.log.append(f'2["e",{n}]', None, (), unique=True)
        assert len(await a.take(a.delivered, 20)) == 20
        generation = a.log.generation
        with redis.Redis(port=redis_server.port) as client:
            went_back(client)
        for n in range(21, 31):
            a.log.append(f'2["e",{n}]', None, (), unique=True)
        assert await asyncio.wait_for(a.states.get(), TIMEOUT) is False
        assert await asyncio.wait_for(a.states.get(), TIMEOUT) is True
        got = [await asyncio.wait_for(_either(a), TIMEOUT) for _ in range(10)]
        assert [entry.packet for entry in got] == [f'2["e",{n}]' for n in range(21, 31)]
        assert a.log.generation != generation
        a.log.append('2["e",31]', None, (), unique=True)
        [after] = await a.take(a.delivered, 1)
        assert after.number == next_number and after.packet == '2["e",31]'


async def _either(replica: Replica) -> Entry:
    """The next entry delivered, numbered or directly."""
    while True:
        for queue in (replica.delivered, replica.direct):
            if not queue.empty():
                return queue.get_nowait()
        await asyncio.sleep(0.01)


async def test_redis_failing_mid_delivery_loses_none_of_this_replicas_events(
    redis_server: RedisServer,
) -> None:
    """Redis goes while the reader is delivering a batch: the replica's own events of that
    batch reach its browsers once each, in order, numbered or directly."""
    slow = asyncio.Event()
    got: asyncio.Queue[Entry] = asyncio.Queue()
    replica = Replica(redis_server.url)

    async def deliver(entry: Entry) -> None:
        got.put_nowait(entry)
        if entry.packet == '2["e",2]':
            slow.set()
            await replica.release.wait()  # a delivery that takes a while (queues)

    await replica.start(deliver=deliver, direct=got.put)
    for n in range(1, 7):
        replica.log.append(f'2["e",{n}]', None, (), unique=True)
    await asyncio.wait_for(slow.wait(), TIMEOUT)
    redis_server.stop()
    replica.log.append('2["e",7]', None, (), unique=True)
    assert await asyncio.wait_for(replica.states.get(), TIMEOUT) is False
    replica.release.set()
    entries = await replica.take(got, 7)
    assert [entry.packet for entry in entries] == [f'2["e",{n}]' for n in range(1, 8)]
    await replica.__aexit__()
    assert got.empty()


async def test_a_hung_redis_does_not_hold_events_back(redis_server: RedisServer) -> None:
    async with Replica(redis_server.url) as a:
        a.log.append('2["e",0]', None, ())
        await a.take(a.delivered, 1)
        redis_server.pause()  # it stops answering, connections open: a hung process
        try:
            for n in range(1, 4):
                a.log.append(f'2["e",{n}]', None, ())
                # delivered while Redis still hangs (it would wait out a 5 s socket timeout)
                [entry] = await a.take(a.direct, 1, timeout=3.0)
                assert entry.packet == f'2["e",{n}]'
        finally:
            redis_server.resume()


async def test_an_append_redis_answers_too_late_is_delivered_once(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis slower than APPEND_TIMEOUT, not gone: the events it appended all the same are
    read back and delivered; they do not also go to browsers directly."""
    late = asyncio.Event()  # set: Redis's answers to appends come late
    execute = redis.asyncio.client.Pipeline.execute

    async def answering_late(pipe: Any, *args: Any, **kwargs: Any) -> Any:
        result = await execute(pipe, *args, **kwargs)  # done in Redis, and read back
        if late.is_set():
            await asyncio.Event().wait()  # the answer never comes in time
        return result

    monkeypatch.setattr(redis.asyncio.client.Pipeline, "execute", answering_late)
    async with Replica(redis_server.url) as a:
        late.set()
        a.log.append('2["e",1]', None, (), identity="e1")
        a.log.append('2["typing",{}]', ["room:r1"], ())  # no identity: by its content
        got = await a.take(a.delivered, 2)
        assert [entry.packet for entry in got] == ['2["e",1]', '2["typing",{}]']
        assert await asyncio.wait_for(a.states.get(), TIMEOUT) is False  # timed out
        late.clear()
        assert await asyncio.wait_for(a.states.get(), TIMEOUT) is True  # and back
        a.log.append('2["e",2]', None, (), identity="e2")
        [entry] = await a.take(a.delivered, 1)
        assert entry.packet == '2["e",2]'
        assert a.direct.empty(), [a.direct.get_nowait().packet for _ in range(a.direct.qsize())]


async def test_equal_events_of_a_replica_that_starts_late_and_one_that_stops(
    redis_server: RedisServer,
) -> None:
    """Events with nothing but their content to tell them apart (a typing indicator, sent
    again and again): each is in the sequence once, whoever started or stopped when."""
    typing = '2["typing",{"room_id":"r1"}]'
    async with Replica(redis_server.url) as a:
        for _ in range(3):  # before the second replica started
            a.log.append(typing, ["room:r1"], ())
        assert len(await a.take(a.delivered, 3)) == 3
        async with Replica(redis_server.url) as b:
            for _ in range(5):  # both receive each
                a.log.append(typing, ["room:r1"], ())
                b.log.append(typing, ["room:r1"], ())
            assert len(await a.take(a.delivered, 5)) == 5
            await a.__aexit__()  # the first stops
            for _ in range(3):
                b.log.append(typing, ["room:r1"], ())
            got = await b.take(b.delivered, 8)
            assert [entry.number for entry in got] == list(range(4, 12))
            assert b.delivered.empty()


async def test_a_malformed_entry_is_a_gap_and_every_replica_reads_on(
    redis_server: RedisServer,
) -> None:
    """Entries enricher did not write (by hand, by another program, damaged) stop no
    replica: each is a gap, and the entries after it are delivered as they came."""
    async with Replica(redis_server.url) as a, Replica(redis_server.url) as b:
        a.log.append('2["e",1]', None, (), unique=True)
        for replica in (a, b):
            [entry] = await replica.take(replica.delivered, 1)
            assert (entry.number, entry.packet) == (1, '2["e",1]')
        malformed: list[dict[str, str | bytes]] = [
            {"k": "x", "p": b"\xff\xfe"},  # not UTF-8
            {"k": "x", "p": '2["e"]', "r": "room:r1"},  # rooms not JSON
            {"k": "x", "p": '2["e"]', "s": '{"sid":1}'},  # skip not a list of sids
            {"x": "1"},  # neither a packet nor a gap
        ]
        with redis.Redis(port=redis_server.port) as client:
            for fields in malformed:
                number = client.incr(f"{TAG}:sequence")
                client.xadd(f"{TAG}:events", fields, id=f"{number}-1")  # type: ignore[arg-type]
        a.log.append('2["e",6]', None, (), unique=True)
        expected = [(2, None), (3, None), (4, None), (5, None), (6, '2["e",6]')]
        for replica in (a, b):
            got = await replica.take(replica.delivered, 5)
            assert [(entry.number, entry.packet) for entry in got] == expected
        assert [(entry.number, entry.packet) for entry in await b.log.fetch(1, 6)] == expected
        b.log.append('2["e",7]', None, (), unique=True)
        for replica in (a, b):
            [entry] = await replica.take(replica.delivered, 1)
            assert (entry.number, entry.packet) == (7, '2["e",7]')


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
        kept = session_kept(a)
        pid = a.downstream.sio.pids[sid][0]
        await browser.sio.eio.disconnect(abort=True)  # a network loss
        await asyncio.wait_for(kept.wait(), TIMEOUT)

        other = await connect(b, None)
        away = await backend.message("r0", "while away")  # to room r0: only a is in it
        await backend.sio.emit("test:barrier", 1)
        await other.next("test:barrier")
        back = await connect(b, {"pid": pid, "offset": seen})
        assert back.sio.get_sid() == sid
        # in the order the replicas appended them: a the room's, b the others
        assert sorted([await back.next() for _ in range(3)]) == [
            ("new_message", (away,)),
            ("room:new_message", (away,)),
            ("test:barrier", (1,)),
        ]
        # b joined the backend room for it, and a lets go of it once it has seen it given
        # back at two sweeps in a row
        assert await backend.client_events.get() == ("room:join", ({"room_id": "r0"},))
        await a.downstream._sweep_shared(a.downstream.shared)
        assert backend.client_events.empty()
        await a.downstream._sweep_shared(a.downstream.shared)
        assert await backend.client_events.get() == ("room:leave", ({"room_id": "r0"},))
        after = await backend.message("r0", "after")
        assert sorted([await back.next() for _ in range(2)]) == [
            ("new_message", (after,)),
            ("room:new_message", (after,)),
        ]
        numbers = [int(offset.partition(".")[2]) for offset in [seen, *back.offsets]]
        assert numbers == sorted(set(numbers))
        assert back.events.empty()
        await back.sio.disconnect()
        await other.sio.disconnect()
        metrics = b.metrics.registry.get_sample_value
        assert metrics("enricher_recoveries_total", {"outcome": "recovered"}) == 1


async def test_a_replica_stopping_stays_in_its_rooms_until_its_browsers_recovered(
    backend: StubBackend, redis_server: RedisServer
) -> None:
    """A rolling update: the stopping replica alone is in a backend room; its browser with
    that room open recovers at the other, and misses none of the room's messages."""
    shared = {"recovery.store": "redis", "recovery.redis_url": redis_server.url}
    async with proxy_for(backend, **shared) as b:
        stopping = proxy_for(backend, **shared)
        a = await stopping.__aenter__()
        browser = await connect(a, None)
        assert (await browser.sio.call("room:join", {"room_id": "r0"}))["ok"]
        assert await backend.client_events.get() == ("room:join", ({"room_id": "r0"},))
        await backend.new_customer("r0", "628111", "Ana", "hello")
        # the two of one message, in either order: one replica appended each
        names = {(await browser.next("room:new_message", "new_message"))[0] for _ in range(2)}
        assert names == {"room:new_message", "new_message"}
        seen, sid = browser.offsets[-1], browser.sio.get_sid()
        pid = a.downstream.sio.pids[sid][0]
        kept = session_kept(a)
        shutdown = asyncio.create_task(stopping.__aexit__(None, None, None))  # SIGTERM
        await asyncio.wait_for(kept.wait(), TIMEOUT)  # its browsers sent away first
        first = await backend.message("r0", "during the update")
        back = await connect(b, {"pid": pid, "offset": seen})
        assert back.sio.get_sid() == sid
        second = await backend.message("r0", "while it stops")
        await asyncio.wait_for(shutdown, TIMEOUT)
        third = await backend.message("r0", "after")
        got = [await back.next("room:new_message") for _ in range(3)]
        assert got == [("room:new_message", (message,)) for message in (first, second, third)]
        await back.sio.disconnect()


async def test_a_replica_stopping_leaves_held_rooms_to_the_others(
    backend: StubBackend, redis_server: RedisServer
) -> None:
    """A room held for its REST answer when a replica stops: the other one's complete
    snapshot goes out, not the stopping one's partial one."""
    answered = asyncio.Event()

    async def slow(room_id: str) -> None:
        await answered.wait()  # REST answers once the stopping replica is gone

    backend.rest_hook = slow
    shared = {"recovery.store": "redis", "recovery.redis_url": redis_server.url}
    async with proxy_for(backend, **shared) as b:
        browser = await connect(b, None)
        async with proxy_for(backend, **shared) as a:
            await backend.new_customer("r9", "628999", "Budi", "hi")  # held for REST
            for _ in range(2):  # both asked REST
                assert await asyncio.wait_for(backend.rest_asked.get(), TIMEOUT) == "r9"
            assert a.downstream.shared is not None
            assert await a.downstream.shared.others_alive()
        answered.set()
        _, (snapshot, *_) = await browser.next("new_room_complete")
        assert snapshot["room_id"] == "r9" and snapshot["enrichment"] == "complete"
        await browser.sio.disconnect()
