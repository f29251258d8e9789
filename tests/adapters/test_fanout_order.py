"""A broadcast written straight to a socket never overtakes one queued for it: not even
while its writer has taken the queued one off the queue and not yet written it, and
whoever queued it. The broadcasts of one loop iteration leave in one write, a new
room's completing message and its snapshot among them, in both modes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from enricher import join
from enricher.internals import websocket as websockets_module
from enricher.shared_mode import Running
from enricher.transparent_mode import RunningTransparent

from .conftest import StubBackend
from .test_access import connect
from .test_transparent import transparent


async def test_a_direct_write_waits_for_what_the_writer_has_taken(
    proxy: Running, browsers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (browser,) = await browsers(1)
    sio = proxy.downstream.sio
    monkeypatch.setattr(websockets_module, "WRITE_BUFFER_LIMIT", -1)  # every socket looks backed up
    await sio.emit("seq", 1)  # queued
    monkeypatch.setattr(websockets_module, "WRITE_BUFFER_LIMIT", 64 * 1024)
    # One loop iteration: the socket's writer takes 1 off its queue, and writes it later.
    await asyncio.sleep(0)
    await sio.emit("seq", 2)  # the queue is empty now: only the backlog count holds it
    got = [await browser.next("seq") for _ in range(2)]
    assert got == [("seq", (1,)), ("seq", (2,))]


class CountedWrites:
    """A transport whose writes are recorded, then made."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def counted(proxy: Running | RunningTransparent) -> CountedWrites:
    websockets = (
        proxy.relay.websockets
        if isinstance(proxy, RunningTransparent)
        else (proxy.downstream._websockets)
    )
    (websocket,) = websockets.values()
    websocket.transport = CountedWrites(websocket.transport)
    return websocket.transport  # type: ignore[no-any-return]


async def test_the_broadcasts_of_one_loop_iteration_leave_in_one_write(
    proxy: Running, browsers: Any
) -> None:
    (browser,) = await browsers(1)
    transport = counted(proxy)
    for n in range(5):  # no await in between gives the loop a turn
        await proxy.downstream.sio.emit("seq", n)
    got = [await browser.next("seq") for _ in range(5)]
    assert got == [("seq", (n,)) for n in range(5)]
    assert len(transport.writes) == 1


async def test_an_event_python_socketio_queues_is_not_overtaken_by_a_broadcast(
    proxy: Running, browsers: Any
) -> None:
    (browser,) = await browsers(1)
    sio = proxy.downstream.sio
    (sid,) = [sid for sid, _ in sio.manager.get_participants("/", None)]
    await sio.emit("seq", 1)  # batched
    await sio.emit("seq", 2, to=sid, callback=lambda *args: None)  # an ack: the queued path
    await sio.emit("seq", 3)  # behind the queued one
    got = [await browser.next("seq") for _ in range(3)]
    assert got == [("seq", (1,)), ("seq", (2,)), ("seq", (3,))]


@pytest.mark.parametrize("mode", ["shared", "transparent"])
async def test_a_new_rooms_completing_message_and_its_snapshot_leave_in_one_write(
    mode: str, backend: StubBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    answered = asyncio.Event()
    rest_answer = join.Join.rest_answer

    def rest_answered(self: join.Join, *args: Any) -> Any:
        actions = rest_answer(self, *args)
        answered.set()
        return actions

    monkeypatch.setattr(join.Join, "rest_answer", rest_answered)
    async with transparent(backend, **{"upstream.mode": mode}) as proxy:
        browser, _ = await connect(proxy)
        await asyncio.wait_for(backend.connections.get(), 5)  # enricher's or the browser's
        transport = counted(proxy)
        room = backend.data.add_room("r1", "6281234", "Budi Santoso")
        room.created = True
        await backend.sio.emit("new_room", room.new_room_payload())
        await asyncio.wait_for(answered.wait(), 5)  # REST knows the room, not its message
        await backend.message("r1", "Halo")  # completes it
        seen = [
            await browser.next("new_message", "new_room_complete", "new_room") for _ in range(3)
        ]
        await browser.sio.disconnect()
    assert [event for event, _ in seen] == ["new_message", "new_room_complete", "new_room"]
    assert seen[1][1][0]["last_message"]["content_text"] == "Halo"
    (write,) = [data for data in transport.writes if b'"new_message"' in data]
    assert b'"new_room_complete"' in write and b'"new_room"' in write
