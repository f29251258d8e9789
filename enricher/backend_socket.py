"""One browser's own engine.io connection to the backend, over WebSocket.

The engine.io protocol (version 4) over a WebSocket is small: the server's OPEN packet
(``0{...}``) first, then MESSAGE packets (``4<text>``; a binary message is a binary frame
as it is), PING from the server answered with PONG, CLOSE. This client speaks exactly that
on one aiohttp WebSocket, and hands every message on in order from one reader, without a
task or a decode per message (python-engineio's client starts a task per message and puts
cookies in its session's jar, which a session shared by browsers must never have).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
import orjson
import structlog

log = structlog.get_logger("enricher.sessions")

# engine.io's own query parameters: the backend gets its own, never the browser's.
ENGINE_IO_QUERY = frozenset({"EIO", "transport", "sid", "t", "j", "b64"})


class BackendUnavailable(Exception):
    """The backend could not be reached, or did not speak engine.io; ``reason`` says which."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def backend_url(base: str, socketio_path: str, query: list[tuple[str, str]]) -> str:
    """The WebSocket address of the backend's engine.io endpoint for one browser: its query
    parameters, engine.io's own for a WebSocket connection."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/") + "/" + socketio_path.strip("/") + "/"
    params = [(k, v) for k, v in query if k not in ENGINE_IO_QUERY]
    params += [("EIO", "4"), ("transport", "websocket")]
    return urlunsplit((scheme, parts.netloc, path, urlencode(params), ""))


Message = str | bytes


class BackendSocket:
    """An engine.io connection to the backend: :meth:`open`, then :meth:`run` hands each
    message to ``on_message`` until the connection ends; :meth:`send` writes one."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        on_message: Callable[[Message], None],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._http = http
        self._on_message = on_message
        self._tls = tls
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._silence = 45.0  # pingInterval + pingTimeout, from the OPEN packet
        self._closing: asyncio.Future[bool] | None = None
        self.closed_by: str | None = None  # why it ended: "backend", "enricher", "timeout"
        self.handshake: dict[str, object] = {}

    async def open(self, url: str, headers: Mapping[str, str], timeout: float) -> None:
        """Connect and read the backend's OPEN packet; :class:`BackendUnavailable` if not."""
        try:
            async with asyncio.timeout(timeout):
                ws = await self._http.ws_connect(
                    url,
                    headers=headers,
                    ssl=self._tls if self._tls is not None else True,
                    max_msg_size=0,  # the backend's events pass whatever their size
                    autoping=True,
                    autoclose=True,
                    # a backend that does not answer a close is not waited for long
                    timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
                )
                try:
                    first = await ws.receive()
                except BaseException:
                    await ws.close()
                    raise
        except TimeoutError:
            raise BackendUnavailable("timeout") from None
        except aiohttp.WSServerHandshakeError as exc:
            raise BackendUnavailable("refused", f"HTTP {exc.status}") from None
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:  # a certificate not verified
            raise BackendUnavailable("tls", str(exc)) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise BackendUnavailable("unreachable", str(exc) or type(exc).__name__) from None
        if first.type != aiohttp.WSMsgType.TEXT or not first.data.startswith("0"):
            await ws.close()
            raise BackendUnavailable("no_open_packet")
        try:
            self.handshake = orjson.loads(first.data[1:])
            interval = float(self.handshake.get("pingInterval", 25000))  # type: ignore[arg-type]
            wait = float(self.handshake.get("pingTimeout", 20000))  # type: ignore[arg-type]
            self._silence = (interval + wait) / 1000.0
        except (ValueError, TypeError, AttributeError):
            await ws.close()
            raise BackendUnavailable("no_open_packet") from None
        self._ws = ws
        self._heard()

    def _heard(self) -> None:
        """The backend spoke: it is alive for another ping interval and timeout."""
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = asyncio.get_running_loop().call_later(self._silence, self._silent)

    def _silent(self) -> None:
        log.info("backend_socket_silent", seconds=self._silence)
        self.closed_by = self.closed_by or "timeout"
        if self._ws is not None:
            self._closing = asyncio.ensure_future(self._ws.close())

    async def run(self) -> None:
        """Read until the connection ends, handing each message on in order."""
        ws = self._ws
        assert ws is not None
        try:
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.BINARY:
                    self._on_message(frame.data)
                    continue
                if frame.type != aiohttp.WSMsgType.TEXT:
                    break
                text: str = frame.data
                kind = text[:1]
                if kind == "4":
                    self._on_message(text[1:])
                elif kind == "2":
                    self._heard()
                    await ws.send_str("3" + text[1:])
                elif kind == "1":
                    self.closed_by = self.closed_by or "backend"
                    break
        except (aiohttp.ClientError, OSError, ConnectionError):
            pass
        finally:
            self.closed_by = self.closed_by or "backend"
            if self._deadline is not None:
                self._deadline.cancel()
            await ws.close()

    async def send(self, message: Message) -> bool:
        """Write one message; False when the connection is gone."""
        ws = self._ws
        if ws is None or ws.closed:
            return False
        try:
            if isinstance(message, str):
                await ws.send_str("4" + message)
            else:
                await ws.send_bytes(message)
        except (aiohttp.ClientError, OSError, ConnectionError):
            return False
        return True

    async def close(self) -> None:
        """End the connection from this side (the backend sees its transport close)."""
        self.closed_by = self.closed_by or "enricher"
        if self._deadline is not None:
            self._deadline.cancel()
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
