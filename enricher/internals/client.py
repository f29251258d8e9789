"""python-socketio's client for the backend connection, and python-engineio's under it, with
the changes enricher makes to their private steps."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import engineio
import socketio


class EngineClient(engineio.AsyncClient):  # type: ignore[misc]
    """python-engineio's client, noting when the backend was last heard from, and reading
    its WebSocket without a task per message.

    python-engineio reads each message under ``asyncio.wait_for``, which on Python 3.11
    starts a task for every read: one backend message per loop iteration however many
    are waiting. Read with aiohttp's own timeout instead, every message already received
    is handed on in one iteration, and the fan-outs of a burst go out together.
    """

    heard_at: datetime | None = None

    async def _receive_packet(self, pkt):  # type: ignore[no-untyped-def]
        self.heard_at = datetime.now(UTC)  # any packet, pings included
        return await super()._receive_packet(pkt)

    async def _read_loop_websocket(self):  # type: ignore[no-untyped-def]
        # python-engineio 4.x's loop, with ws.receive(timeout) for wait_for(ws.receive())
        while self.state == "connected" and self.write_loop_task:
            pkt = None
            try:
                message = await self.ws.receive(timeout=self.ping_interval + self.ping_timeout)
                if isinstance(message.data, str | bytes):  # else closed, or broken
                    pkt = engineio.packet.Packet(encoded_packet=message.data)
            except TimeoutError:
                self.logger.warning("Server has stopped communicating, aborting")
            except Exception as exc:
                self.logger.info('Unexpected error receiving packet: "%s", aborting', exc)
            if pkt is None:
                await self.queue.put(None)  # ends the write loop
                break
            await self._receive_packet(pkt)  # type: ignore[no-untyped-call]
        if self.write_loop_task:
            await self.write_loop_task
        if self.state == "connected":
            await self._trigger_event("disconnect", self.reason.TRANSPORT_ERROR, run_async=False)
            with contextlib.suppress(ValueError):
                engineio.base_client.connected_clients.remove(self)
            await self._reset()


class Client(socketio.AsyncClient):  # type: ignore[misc]
    """python-socketio's client, handing on the packets it cannot decode."""

    on_undecodable: Callable[[str], None] = staticmethod(lambda text: None)

    def _engineio_client_class(self):  # type: ignore[no-untyped-def]
        return EngineClient

    async def _handle_eio_message(self, data):  # type: ignore[no-untyped-def]
        try:
            return await super()._handle_eio_message(data)
        except RecursionError:  # arguments nested deeper than a JSON decoder goes
            self.on_undecodable(data)
            return None
