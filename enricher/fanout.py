"""Broadcasts to browsers: one WebSocket frame built once, written to every idle socket.

python-socketio sends a broadcast through one asyncio task per recipient, which queues the
packet on the socket's engine.io queue and wakes the socket's writer task, which frames and
writes it. A server-to-client text frame is the same bytes for every recipient, so this
module builds it once and writes it straight to each socket's transport when nothing is
waiting in front of it on that socket (:meth:`~.internals.websocket.WebSocket.writable`:
nothing queued for it is still unwritten, its writer is not in the middle of a send, and
its transport's buffer is below ``WRITE_BUFFER_LIMIT``). Every other
recipient (polling, upgrading, busy, slow) takes python-socketio's own path, so the order of
events on each socket is kept.

Direct frames are not written one by one: each socket's frames of one loop iteration are
written together when the iteration ends (``WriteBatch``), one system call per socket
however many events it got; when enricher keeps up that is one frame, when it is behind (a
burst, a new room's snapshot and its first message) several. Anything else written to that
socket (python-engineio's writer, a close) first writes what is batched for it.

A direct frame is never compressed, which is valid on a connection that negotiated
permessage-deflate too (RFC 7692: an uncompressed message has RSV1 clear).

A browser that stops reading (a stalled network, a frozen tab) gets its events queued;
once ``max_queued`` of them wait, it is dropped: its connection is cut, its queue freed,
and socket.io-client reconnects by itself when it can. Nobody else waits for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from bidict import ValueDuplicationError
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from .background import Background
from .internals.sio import Manager
from .internals.websocket import WebSocket, text_frame
from .recovery import Recovery
from .shared import SharedLog
from .shared_entries import Entry, identity

log = structlog.get_logger("enricher.downstream")


class BroadcastManager(Manager):
    """python-socketio's manager, with broadcasts written directly where they can be and
    each browser's queue bounded.

    ``count(direct, queued)`` is told, per emit, how many recipients took each path;
    ``dropped()``, of each browser dropped for its backlog. With ``recovery``, every
    event without an ack to namespace ``/`` is stamped with its offset (once, for every
    recipient) and kept for browsers that may come back.
    """

    def __init__(
        self,
        websockets: dict[str, WebSocket],
        *,
        direct: bool,
        max_queued: int = 1000,
        count: Callable[[int, int], None] = lambda direct, queued: None,
        dropped: Callable[[], None] = lambda: None,
        recovery: Recovery | None = None,
        shared: SharedLog | None = None,
    ) -> None:
        super().__init__()
        self.recovery = recovery
        # With the replicas' shared sequence, broadcasts are appended to it and delivered
        # when read back (:meth:`deliver_entry`), stamped with their number there.
        self.shared = shared if recovery is not None else None
        # Browsers whose connection enricher closes on purpose: not to be recovered.
        self.unrecoverable: set[str] = set()
        # The sid a connection being registered takes (a recovered session's), by eio sid.
        self._reused: dict[str, str] = {}
        self._websockets = websockets
        self._direct = direct
        self._max_queued = max_queued
        self._count = count
        self._dropped = dropped
        self._dropping: set[str] = set()  # eio sids being closed for their backlog
        self._closing = Background()  # their close tasks

    @property
    def max_replay(self) -> int:
        """Most missed events a returning browser is given: half what may wait for it, so
        that what comes live meanwhile does not get it dropped."""
        return self._max_queued // 2

    async def emit(  # type: ignore[no-untyped-def]
        self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, **kwargs
    ):
        room = to or room
        stamped = self.recovery is not None and namespace == "/"
        if callback is not None or (namespace not in self.rooms and not stamped):
            return await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs
            )
        if isinstance(data, tuple):
            data = list(data)
        elif data is not None:
            data = [data]
        else:
            data = []
        encoded = self.server.packet_class(
            sio_packet.EVENT, namespace=namespace, data=[event, *data]
        ).encode()
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        if self.shared is not None and namespace == "/":
            text, *attachments = encoded if isinstance(encoded, list) else [encoded]
            self.shared.append(
                text,
                _rooms(room),
                [sid for sid in skip if sid is not None],
                attachments,
                identity=identity(event, data),
                # to one of this replica's browsers: its own, never merged with another's
                unique=isinstance(room, str) and self.eio_sid_from_sid(room, "/") is not None,
            )
            return None
        if isinstance(encoded, list):  # binary attachments: several engine.io packets
            if not stamped:
                return await super().emit(
                    event, data, namespace, room=room, skip_sid=skip_sid, **kwargs
                )
            text, *attachments = encoded
            text = self._stamp(text, room, skip, attachments)
            return await self._deliver_binary(text, attachments, namespace, room, skip)
        if stamped:
            encoded = self._stamp(encoded, room, skip)
        if namespace in self.rooms:
            await self._deliver(encoded, namespace, room, skip)

    @property
    def backlogs(self) -> int:
        """Browsers with packets on their way through their queue now."""
        return sum(1 for socket in self.server.eio.sockets.values() if socket.queue.unwritten)

    async def emit_encoded(self, encoded: str, room: str | None = None) -> None:
        """Broadcast a Socket.IO packet that is already text (namespace ``/``, no ack)."""
        if self.shared is not None:
            self.shared.append(encoded, _rooms(room), ())
            return
        if self.recovery is not None:
            encoded = self._stamp(encoded, room, [None])
        if "/" in self.rooms:
            await self._deliver(encoded, "/", room, [None])

    def _stamp(
        self, encoded: str, room: Any, skip: list[Any], attachments: list[bytes] | None = None
    ) -> str:
        assert self.recovery is not None
        encoded = encoded.rstrip()
        if not encoded.endswith("]"):  # not an event's arguments: passed on as it came
            return encoded
        return self.recovery.stamp(
            encoded, _rooms(room), [sid for sid in skip if sid is not None], attachments or ()
        )

    async def deliver_entry(self, entry: Entry) -> None:
        """An entry of the shared sequence, read back: kept, stamped with its number, and
        delivered to this replica's browsers it is meant for."""
        assert self.recovery is not None
        stamped = self.recovery.record(
            entry.number, entry.packet, entry.rooms, entry.skip, entry.attachments
        )
        if entry.packet is not None:  # a packet that cannot take an offset goes as it is
            packet = stamped or entry.packet
            await self.deliver_direct(Entry(0, packet, entry.rooms, entry.skip, entry.attachments))

    async def deliver_direct(self, entry: Entry) -> None:
        """A broadcast delivered as it is (unnumbered: the shared sequence is away)."""
        if entry.packet is None or "/" not in self.rooms:
            return
        skip = list(entry.skip)
        if entry.attachments:
            await self._deliver_binary(
                entry.packet, list(entry.attachments), "/", entry.rooms, skip
            )
        else:
            await self._deliver(entry.packet, "/", entry.rooms, skip)

    async def _deliver_binary(
        self, text: str, attachments: list[bytes], namespace: str, room: Any, skip: list[Any]
    ) -> None:
        """A binary event (its text, then its attachments) through each browser's queue."""
        recipients = [
            eio_sid for sid, eio_sid in self.get_participants(namespace, room) if sid not in skip
        ]
        for eio_sid in recipients:
            await self.send_raw(eio_sid, text, attachments)

    async def send_raw(self, eio_sid: str, text: str, attachments: Any = ()) -> None:
        """One Socket.IO packet already encoded, through the browser's queue (where no
        direct write overtakes it)."""
        for part in (text, *attachments):
            await self.send_eio_packet(eio_sid, eio_packet.Packet(eio_packet.MESSAGE, part))

    def queue_now(self, engine_socket: Any, eio_sid: str, text: str, attachments: Any = ()) -> None:
        """Like :meth:`send_raw`, without yielding to the loop: whatever is sent to this
        browser after this call goes behind it."""
        for part in (text, *attachments):
            engine_socket.queue.message(part)

    def reuse_sid(self, eio_sid: str, sid: str) -> None:
        """The next :meth:`pre_connect` of ``eio_sid`` registers it as ``sid``."""
        self._reused[eio_sid] = sid

    async def pre_connect(self, eio_sid, namespace):  # type: ignore[no-untyped-def]
        sid = self._reused.pop(eio_sid, None)
        if sid is None:
            return await super().pre_connect(eio_sid, namespace)
        # python-socketio's own, with the sid given instead of a new one
        try:
            self.basic_enter_room(sid, namespace, None, eio_sid=eio_sid)
        except ValueDuplicationError:
            return None
        self.basic_enter_room(sid, namespace, sid, eio_sid=eio_sid)
        self.pending_connect.setdefault(namespace, []).append(sid)
        return sid

    async def _deliver(self, encoded: str, namespace: str, room: Any, skip: list[Any]) -> None:
        frame = text_frame(b"4" + encoded.encode())  # "4": an engine.io MESSAGE
        queued: list[tuple[str, str]] = []
        direct = 0
        websockets = self._websockets if self._direct else {}
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            websocket = websockets.get(eio_sid)
            if websocket is not None and websocket.writable():
                websocket.write_frame(frame)
                direct += 1
            else:
                queued.append((sid, eio_sid))
        engine_sockets = self.server.eio.sockets
        for sid, eio_sid in queued:
            engine_socket = engine_sockets.get(eio_sid)
            if engine_socket is None:  # gone meanwhile (dropped above, say): nothing to send
                continue
            if engine_socket.queue.qsize() >= self._max_queued:
                await self._drop(sid, eio_sid, engine_socket)
            else:
                packet = eio_packet.Packet(eio_packet.MESSAGE, encoded)
                await self.send_eio_packet(eio_sid, packet)
        self._count(direct, len(queued))

    async def _drop(self, sid: str, eio_sid: str, engine_socket: Any) -> None:
        """Cut a browser whose backlog reached the limit; it reconnects when it can."""
        if engine_socket.closing or engine_socket.closed or eio_sid in self._dropping:
            return
        log.warning(
            "browser_dropped", reason="backlog", queued=engine_socket.queue.qsize(), sid=sid
        )
        self._dropped()
        self.unrecoverable.add(sid)  # its backlog is not replayed either
        websocket = self._websockets.get(eio_sid)
        if websocket is not None and websocket.transport is not None:
            websocket.transport.abort()  # what is buffered for it goes too
        # Closed in a task of its own: the close runs the disconnect handlers, which may
        # wait on the backend, and the broadcast under way must reach the others first
        # (another one started meanwhile would overtake it at the browsers still to go).
        self._dropping.add(eio_sid)
        self._closing.start(self._close(eio_sid, engine_socket))

    async def _close(self, eio_sid: str, engine_socket: Any) -> None:
        try:
            await engine_socket.close(
                wait=False, abort=True, reason=self.server.eio.reason.SERVER_DISCONNECT
            )
        finally:
            self._dropping.discard(eio_sid)


def _rooms(room: Any) -> list[str] | None:
    """An emit's ``to``/``room`` as a list of rooms (None: everyone)."""
    return None if room is None else [room] if isinstance(room, str) else list(room)
