"""python-socketio's server and manager with the private steps enricher changes under public
names: a subclass overrides :meth:`Server.namespace_connect` rather than python-socketio's
``_handle_connect``, and so on. Each default is python-socketio's own step."""

from __future__ import annotations

from typing import Any

import socketio


class Server(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server; its steps, each python-socketio's unless overridden."""

    async def _handle_connect(self, eio_sid, namespace, data):  # type: ignore[no-untyped-def]
        return await self.namespace_connect(eio_sid, namespace, data)

    async def _handle_eio_connect(self, eio_sid, environ):  # type: ignore[no-untyped-def]
        return await self.engine_connect(eio_sid, environ)

    async def _handle_eio_disconnect(self, eio_sid, reason):  # type: ignore[no-untyped-def]
        return await self.engine_disconnect(eio_sid, reason)

    async def _handle_eio_message(self, eio_sid, data):  # type: ignore[no-untyped-def]
        return await self.engine_message(eio_sid, data)

    async def _handle_event_internal(  # type: ignore[no-untyped-def]
        self, server, sid, eio_sid, data, namespace, id
    ):
        return await self.event_received(sid, eio_sid, data, namespace, id)

    async def namespace_connect(self, eio_sid: str, namespace: str | None, data: Any) -> Any:
        """A Socket.IO CONNECT to ``namespace`` (None: ``/``) with its auth ``data``."""
        return await super()._handle_connect(eio_sid, namespace, data)

    async def engine_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        """A new engine.io connection."""
        return await super()._handle_eio_connect(eio_sid, environ)

    async def engine_disconnect(self, eio_sid: str, reason: Any) -> Any:
        """An engine.io connection closed, for ``reason``."""
        return await super()._handle_eio_disconnect(eio_sid, reason)

    async def engine_message(self, eio_sid: str, data: str | bytes) -> Any:
        """An engine.io message of a browser's: a Socket.IO packet or an attachment."""
        return await super()._handle_eio_message(eio_sid, data)

    async def event_received(
        self, sid: str, eio_sid: str, data: list[Any], namespace: str, id: int | None
    ) -> Any:
        """A browser's event ``data`` (its name, then its arguments); ``id``: its ack's."""
        return await super()._handle_event_internal(self, sid, eio_sid, data, namespace, id)

    async def send_packet(self, eio_sid: str, pkt: Any) -> None:
        """Send a Socket.IO packet to one browser (through its queue)."""
        await self._send_packet(eio_sid, pkt)

    async def trigger_event(self, event: str, namespace: str, *args: Any) -> Any:
        """Run the handler of ``event`` in ``namespace``, as python-socketio runs it."""
        return await self._trigger_event(event, namespace, *args)

    def forget_attachments(self, eio_sid: str) -> None:
        """Drop the binary attachments a browser's packet is still waiting for."""
        self._binary_packet.pop(eio_sid, None)


class Manager(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's manager, with the server's step that queues an engine.io packet."""

    async def send_eio_packet(self, eio_sid: str, pkt: Any) -> None:
        """Queue an engine.io packet for one browser."""
        await self.server._send_eio_packet(eio_sid, pkt)
