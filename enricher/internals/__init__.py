"""The only part of enricher that touches what python-socketio, python-engineio and aiohttp
do not publish: their private methods and attributes, the interface of python-engineio's
WebSocket driver, module attributes swapped for enricher's own. Everything else uses the
public names these modules give them.

- :mod:`.websocket`: a browser's WebSocket (python-engineio's driver interface) and the
  direct write of broadcast frames;
- :mod:`.engine`: python-engineio's server socket and queue, made to behave as a Node
  server's (pings, upgrade, no task for an idle browser);
- :mod:`.sio`: python-socketio's server and manager, their private steps under public names;
- :mod:`.client`: python-socketio's and python-engineio's client for the backend;
- :mod:`.http`: aiohttp's answers without the headers it adds of its own.

:data:`RELIED_ON` lists every name relied on, with its signature; ``tests/core/
test_internals.py`` checks it against the installed versions (pinned exactly in
pyproject.toml), so an upgrade that moves one fails with the name that moved.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp.web_response
import engineio.async_drivers.aiohttp
import engineio.async_server
import engineio.async_socket
import engineio.base_client
import socketio
from aiohttp import web
from engineio import packet


@dataclass(frozen=True)
class Relied:
    """``owner.name`` with ``signature`` (``str(inspect.signature(...))``; None: not a
    function); with ``in_source``, a text the owner's source (its class or module) must hold
    (a use of the name enricher's change depends on); with ``copied``, the first 16 hex digits of the
    SHA-256 of the function's source: enricher copies or rewrites its body, so any change
    to it is to be read and carried over."""

    owner: object
    name: str
    signature: str | None
    in_source: str | None = None
    copied: str | None = None


SIO_SERVER, SIO_CLIENT = socketio.AsyncServer, socketio.AsyncClient
SIO_MANAGER = socketio.AsyncManager
EMIT_SIGNATURE = (
    "(self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, **kwargs)"
)
EIO_SERVER, EIO_CLIENT = engineio.AsyncServer, engineio.AsyncClient
EIO_SOCKET = engineio.async_socket.AsyncSocket
EIO_WEBSOCKET = engineio.async_drivers.aiohttp.WebSocket

RELIED_ON: tuple[Relied, ...] = (
    # python-socketio's server steps (sio.Server)
    # rewritten with recovery (browsers.BrowserServer._connect_recovering)
    Relied(
        SIO_SERVER,
        "_handle_connect",
        "(self, eio_sid, namespace, data)",
        copied="c97c480cf777de36",
    ),
    Relied(SIO_SERVER, "_handle_eio_connect", "(self, eio_sid, environ)"),
    Relied(SIO_SERVER, "_handle_eio_disconnect", "(self, eio_sid, reason)"),
    Relied(SIO_SERVER, "_handle_eio_message", "(self, eio_sid, data)"),
    Relied(
        SIO_SERVER,
        "_handle_event_internal",
        "(self, server, sid, eio_sid, data, namespace, id)",
    ),
    Relied(SIO_SERVER, "_send_packet", "(self, eio_sid, pkt)"),
    Relied(SIO_SERVER, "_send_eio_packet", "(self, eio_sid, eio_pkt)"),
    Relied(SIO_SERVER, "_trigger_event", "(self, event, namespace, *args)"),
    Relied(SIO_SERVER, "_binary_packet", None),  # an instance's: {eio_sid: packet}
    # python-socketio's and python-engineio's client (client)
    Relied(SIO_CLIENT, "_engineio_client_class", "(self)"),
    Relied(SIO_CLIENT, "_handle_eio_message", "(self, data)"),
    Relied(EIO_CLIENT, "_receive_packet", "(self, pkt)"),
    Relied(EIO_CLIENT, "_read_loop_websocket", "(self)", copied="83f5111bf4e5b524"),
    Relied(EIO_CLIENT, "_trigger_event", "(self, event, *args, **kwargs)"),
    Relied(EIO_CLIENT, "_reset", "(self)"),
    Relied(engineio.base_client, "connected_clients", None),
    # python-engineio's server (engine, websocket)
    Relied(EIO_SERVER, "_async", None, in_source="self._async['translate_request']"),
    Relied(
        engineio.async_server,
        "AsyncServer",
        None,
        in_source="async_socket.AsyncSocket(self, sid)",  # made with the module's class
    ),
    Relied(EIO_SERVER, "create_queue", "(self, *args, **kwargs)"),
    # its heartbeat check, which closes the sockets it finds closed (sockets dict)
    Relied(
        EIO_SERVER,
        "_service_task",
        "(self)",
        in_source="del self.sockets[s.sid]",
        copied="b6358bda51d0b34b",
    ),
    Relied(engineio.async_socket, "AsyncSocket", None),
    # its attributes, read and set by EngineSocket: queue (made with create_queue),
    # last_ping, connected, upgrading, upgraded, closing, closed
    Relied(EIO_SOCKET, "__init__", "(self, server, sid)", copied="8532b631a4dc815f"),
    Relied(EIO_SOCKET, "_websocket_handler", "(self, ws)", copied="27f120df4d717a24"),
    Relied(EIO_SOCKET, "handle_get_request", "(self, environ)", copied="05eaae9f0a60d9be"),
    Relied(EIO_SOCKET, "poll", "(self)", copied="826f58a9f3606db2"),
    Relied(
        EIO_SOCKET,
        "close",
        "(self, wait=True, abort=False, reason=None)",
        copied="faa2e93902543244",
    ),
    Relied(EIO_SOCKET, "send", "(self, pkt)", copied="0437276ccba7ab09"),
    Relied(EIO_SOCKET, "receive", "(self, pkt)"),
    Relied(EIO_SOCKET, "schedule_ping", "(self)", copied="fe316639159cd70d"),
    Relied(EIO_SOCKET, "check_ping_timeout", "(self)"),
    Relied(EIO_WEBSOCKET, "__init__", "(self, handler, server)"),
    Relied(EIO_WEBSOCKET, "__call__", "(self, environ)"),
    Relied(EIO_WEBSOCKET, "wait", "(self)"),
    Relied(EIO_WEBSOCKET, "send", "(self, message)"),
    Relied(EIO_WEBSOCKET, "close", "(self)"),
    Relied(packet.Packet, "encode", "(self, b64=False)"),
    # python-socketio's manager (fanout.BroadcastManager) and server state read by enricher
    Relied(SIO_MANAGER, "emit", EMIT_SIGNATURE, copied="01ccd5b82b4f955e"),  # rewritten
    Relied(SIO_MANAGER, "pre_connect", "(self, eio_sid, namespace)", copied="84f2cdf2a4ddf07c"),
    Relied(SIO_MANAGER, "rooms", None),  # an instance's: {namespace: {room: {sid: eio_sid}}}
    Relied(SIO_MANAGER, "pending_connect", None),  # an instance's
    Relied(SIO_SERVER, "environ", None),  # an instance's: {eio_sid: environ}
    # aiohttp (http)
    Relied(
        web.StreamResponse,
        "_prepare_headers",
        "(self) -> None",
        in_source="await self._prepare_headers()",
    ),
    Relied(
        web.StreamResponse,
        "_send_headers_immediately",
        None,  # an instance's
        in_source="if self._send_headers_immediately:",
    ),
    Relied(
        aiohttp.web_response,
        "SERVER_SOFTWARE",
        None,
        in_source="headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)",  # read at each answer
    ),
)
