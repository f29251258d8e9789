"""The backend's REST API: ``GET /rooms/<id>``, bounded and timed out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import aiohttp
import orjson
import structlog
from yarl import URL

from .join_types import RestFailure
from .payloads import Parsed, Rejected, Room, parse_rest_room

log = structlog.get_logger("enricher.backend")

RestResult = Parsed[Room] | RestFailure

# Outcomes that say the backend is not answering; an error status below 500 is an answer.
_FAILURES = frozenset({"timeout", "connection_error", "tls_error", "5xx"})


class CircuitBreaker:
    """Stops asking a backend that keeps failing, so requests do not pile up on it.

    After ``failures`` failed requests in a row it opens: for ``cooldown`` seconds every
    request fails at once. Then one request goes through; its success closes the breaker,
    its failure opens it again. ``clock`` is injected for tests.
    """

    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = failures
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._open_until: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def allow(self) -> bool:
        """Whether a request may go to the backend now."""
        if self._open_until is None:
            return True
        if self._probing or self._clock() < self._open_until:
            return False
        self._probing = True
        return True

    def release(self) -> None:
        """A request :meth:`allow` let through was not sent after all."""
        self._probing = False

    def record(self, ok: bool) -> None:
        """The outcome of a request that :meth:`allow` let through."""
        if ok:
            self._failures = 0
            self._open_until = None
        else:
            self._failures += 1
            if self._probing or self._failures >= self._limit:
                if self._open_until is None:
                    log.warning("rest_circuit_opened", failures=self._failures)
                self._open_until = self._clock() + self._cooldown
        self._probing = False


class RoomFetcher:
    """Fetches rooms from the backend, at most ``max_in_flight`` at a time.

    :meth:`fetch_room` never raises: every failure comes back as a :class:`RestFailure`
    with a short reason (``rest_timeout``, ``rest_status_5xx``, ``rest_connection``,
    ``rest_invalid_body``, ``rest_circuit_open``, ``rest_not_found``...).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout: float,
        max_in_flight: int,
        headers: dict[str, str] | None = None,
        observe: Callable[[str, float | None], None] | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._session = session
        self._base_url = URL(base_url)
        self._base_path = self._base_url.raw_path.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._headers = headers or {}
        self._observe = observe or (lambda outcome, seconds: None)
        self.breaker = breaker or CircuitBreaker(failures=5, cooldown=5.0)
        self.in_flight = 0
        self.last_outcome: str | None = None

    @property
    def reachable(self) -> bool:
        """False while the latest request could not reach the backend (refused, timed out).

        An error status is an answer: one 5xx must not take every replica out of service.
        """
        return self.last_outcome not in ("timeout", "connection_error", "tls_error")

    def room_url(self, room_id: str) -> URL:
        """The REST address of a room; the id is always one escaped path segment, sent
        as it is (``.`` and ``..`` escaped too: a URL parser would resolve them)."""
        segment = quote(room_id, safe="")
        if segment in (".", ".."):
            segment = segment.replace(".", "%2E")
        return self._base_url.with_path(f"{self._base_path}/rooms/{segment}", encoded=True)

    async def fetch_room(
        self, room_id: str, wanted: Callable[[], bool] = lambda: True
    ) -> RestResult:
        """``GET /rooms/<room_id>``, parsed; the outcome is reported to ``observe``.

        ``wanted()`` is asked once a slot is free: a room whose snapshot went out while
        its request waited is not fetched at all.
        """
        if not self.breaker.allow():
            self._observe("circuit_open", None)
            return RestFailure("rest_circuit_open")
        async with self._slots:
            if not wanted():
                self.breaker.release()  # nothing was asked: a probe is not spent
                return RestFailure("rest_not_needed")
            self.in_flight += 1
            started = time.perf_counter()
            try:
                result, outcome = await self._get(room_id)
            finally:
                self.in_flight -= 1
            self.last_outcome = outcome
            self.breaker.record(ok=outcome not in _FAILURES)
            self._observe(outcome, time.perf_counter() - started)
            return result

    async def _get(self, room_id: str) -> tuple[RestResult, str]:
        try:
            async with self._session.get(
                self.room_url(room_id), headers=self._headers, timeout=self._timeout
            ) as response:
                status_class = f"{response.status // 100}xx"
                if response.status == 404:  # the backend does not know the room
                    return RestFailure("rest_not_found"), status_class
                if response.status != 200:
                    return RestFailure(f"rest_status_{status_class}"), status_class
                body = await response.read()
        except TimeoutError:
            return RestFailure("rest_timeout"), "timeout"
        except aiohttp.ClientSSLError as exc:  # a certificate not verified, a TLS failure
            log.warning("rest_tls_failed", room_id=room_id, error=str(exc))
            return RestFailure("rest_tls"), "tls_error"
        except aiohttp.ClientError:
            return RestFailure("rest_connection"), "connection_error"
        try:
            return parse_rest_room(orjson.loads(body), room_id), status_class
        except Exception as exc:  # whatever the body is, the room goes on without it
            reason = exc.reason if isinstance(exc, Rejected) else type(exc).__name__
            log.warning("rest_body_rejected", room_id=room_id, reason=reason)
            return RestFailure("rest_invalid_body"), "invalid_body"


FetchRoom = Callable[[str, Callable[[], bool]], Awaitable[RestResult]]
