"""A browser's engine.io queue: what python-engineio's writer and polls take from it, in
order, none lost when a poll ends while it is handed a packet, and counted until written."""

from __future__ import annotations

import asyncio

from engineio import packet as eio_packet

from enricher.internals.engine import SocketQueue


def message(data: str) -> eio_packet.Packet:
    return eio_packet.Packet(eio_packet.MESSAGE, data)


async def test_packets_come_out_in_order_and_join_waits_until_each_is_done() -> None:
    queue = SocketQueue()
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)  # the writer waits for a packet
    queue.put_nowait(message("a"))
    await queue.put(message("b"))
    queue.message("c")
    assert (await waiting).data == "a"
    assert [queue.get_nowait().data, queue.get_nowait().data] == ["b", "c"]
    assert queue.empty() and queue.qsize() == 0
    joined = asyncio.ensure_future(queue.join())
    queue.task_done()
    queue.task_done()
    await asyncio.sleep(0)
    assert not joined.done()  # one of the three is not done yet
    queue.task_done()
    await asyncio.wait_for(joined, 1)


async def test_a_poll_that_ends_as_it_is_handed_a_packet_leaves_it_to_the_next() -> None:
    queue = SocketQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(message("a"))  # wakes the first
    first.cancel()  # which ends before it runs (its poll timed out, its request left)
    assert (await asyncio.wait_for(second, 1)).data == "a"
    assert first.cancelled()


async def test_a_packet_is_counted_until_it_is_encoded_for_writing() -> None:
    queue = SocketQueue()
    queue.put_nowait(message("a"))
    queue.message("b")
    packets = [queue.get_nowait(), queue.get_nowait()]
    assert queue.empty() and queue.unwritten == 2  # taken off, not written yet
    packets[0].encode()
    assert queue.unwritten == 1
    packets[1].encode()
    packets[1].encode()  # encoded again (a retry): counted once
    assert queue.unwritten == 0
