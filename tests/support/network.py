"""What tests do to a connection that no public API offers.

aiohttp's client WebSocket can only be closed politely (a close frame, then the TCP
close). A browser whose network goes away sends neither: :func:`cut` aborts the TCP
connection under the WebSocket. This is the one place the tests reach into aiohttp.
"""

from __future__ import annotations

import aiohttp


def cut(ws: aiohttp.ClientWebSocketResponse) -> None:
    """The connection cut under the browser: no close frame, no FIN, a reset."""
    connection = ws._response.connection
    assert connection is not None and connection.transport is not None, "already closed"
    connection.transport.abort()
