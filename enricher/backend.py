"""The backend's REST API: ``GET /rooms/<id>``, bounded and timed out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import aiohttp
import orjson
import structlog

from .join import RestFailure
from .payloads import Parsed, Rejected, Room, parse_rest_room

log = structlog.get_logger("enricher.backend")

RestResult = Parsed[Room] | RestFailure


class RoomFetcher:
    """Fetches rooms from the backend, at most ``max_in_flight`` at a time.

    :meth:`fetch_room` never raises: every failure comes back as a :class:`RestFailure`
    with a short reason (``rest_timeout``, ``rest_status_5xx``, ``rest_connection``,
    ``rest_invalid_body``...).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout: float,
        max_in_flight: int,
        headers: dict[str, str] | None = None,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._headers = headers or {}
        self._observe = observe or (lambda outcome, seconds: None)
        self.in_flight = 0
        self.last_outcome: str | None = None

    @property
    def reachable(self) -> bool:
        """False while the latest request could not reach the backend (refused, timed out).

        An error status is an answer: one 5xx must not take every replica out of service.
        """
        return self.last_outcome not in ("timeout", "connection_error")

    def room_url(self, room_id: str) -> str:
        """The REST address of a room; the id is always one escaped path segment."""
        return f"{self._base_url}/rooms/{quote(room_id, safe='')}"

    async def fetch_room(self, room_id: str, wanted: Callable[[], bool] = bool) -> RestResult:
        """``GET /rooms/<room_id>``, parsed; the outcome is reported to ``observe``.

        ``wanted()`` is asked once a slot is free: a room whose snapshot went out while
        its request waited is not fetched at all.
        """
        async with self._slots:
            if not wanted():
                return RestFailure("rest_not_needed")
            self.in_flight += 1
            started = time.perf_counter()
            try:
                result, outcome = await self._get(room_id)
            finally:
                self.in_flight -= 1
            self.last_outcome = outcome
            self._observe(outcome, time.perf_counter() - started)
            return result

    async def _get(self, room_id: str) -> tuple[RestResult, str]:
        try:
            async with self._session.get(
                self.room_url(room_id), headers=self._headers, timeout=self._timeout
            ) as response:
                status_class = f"{response.status // 100}xx"
                if response.status != 200:
                    return RestFailure(f"rest_status_{status_class}"), status_class
                body = await response.read()
        except TimeoutError:
            return RestFailure("rest_timeout"), "timeout"
        except aiohttp.ClientError:
            return RestFailure("rest_connection"), "connection_error"
        try:
            return parse_rest_room(orjson.loads(body), room_id), status_class
        except Exception as exc:  # whatever the body is, the room goes on without it
            reason = exc.reason if isinstance(exc, Rejected) else type(exc).__name__
            log.warning("rest_body_rejected", room_id=room_id, reason=reason)
            return RestFailure("rest_invalid_body"), "invalid_body"


FetchRoom = Callable[[str, Callable[[], bool]], Awaitable[RestResult]]
