"""Who may connect, and to which room: the browsers' credentials checked at the edge.

A browser presents credentials in its handshake, as it did to the backend: a cookie, an
``Authorization`` header, or socket.io-client's ``auth: {token}``. A *gate* admits or
refuses the socket before it is part of any broadcast (``none`` admits everyone, ``jwt``
checks a JSON Web Token, ``backend`` asks a backend endpoint); :class:`RoomAccess` asks
the backend whether those credentials may read a room before a ``room:join``.
Credentials are forwarded as they came and never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import parse_qs

import aiohttp
import jwt
import structlog
from cachetools import TTLCache
from yarl import URL

from .config import AuthSettings

log = structlog.get_logger("enricher.access")

# The handshake headers that carry a browser's credentials, as WSGI environ keys.
_CREDENTIAL_HEADERS = {"Cookie": "HTTP_COOKIE", "Authorization": "HTTP_AUTHORIZATION"}
# What of a handshake's environ Credentials.from_handshake reads.
HANDSHAKE_CREDENTIALS = (*_CREDENTIAL_HEADERS.values(), "QUERY_STRING")
_CACHE_SIZE = 10_000
JWKS_RETRY_AFTER = 5.0  # seconds a key set URL that failed is left alone


class Refused(Exception):
    """A browser, or one of its requests, that is not let through; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Credentials:
    """What a browser presented when it connected."""

    headers: Mapping[str, str] = field(default_factory=dict)  # Cookie, Authorization
    token: str | None = None  # auth.token, else the Bearer header, else ?token=
    auth: Any = None  # socket.io-client's ``auth`` option, as sent
    query: Mapping[str, str] = field(default_factory=dict)  # the handshake's own parameters

    @classmethod
    def from_handshake(cls, environ: Mapping[str, Any], auth: Any) -> Credentials:
        headers = {
            name: environ[key] for name, key in _CREDENTIAL_HEADERS.items() if key in environ
        }
        query = {
            name: values[0]
            for name, values in parse_qs(environ.get("QUERY_STRING", "")).items()
            if name not in ("EIO", "transport", "sid", "t", "j", "b64")
        }
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            scheme, _, value = headers.get("Authorization", "").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" and value.strip() else None
        if token is None:
            token = query.get("token") or None
        return cls(headers=headers, token=token, auth=auth, query=query)

    @classmethod
    def from_http(cls, headers: Mapping[str, str], query_string: str) -> Credentials:
        """What a browser's HTTP request presents: the same as a handshake without ``auth``."""
        environ = {
            key: headers[name] for name, key in _CREDENTIAL_HEADERS.items() if name in headers
        }
        return cls.from_handshake({**environ, "QUERY_STRING": query_string}, None)

    def forwarded(self) -> dict[str, str]:
        """The headers that carry these credentials to the backend: the browser's cookie
        and ``Authorization``, or its ``auth.token`` as a Bearer token."""
        headers = dict(self.headers)
        if "Authorization" not in headers and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def fingerprint(self) -> str:
        """A digest that tells credentials apart, for caching answers about them."""
        text = "\n".join(f"{k}: {v}" for k, v in sorted(self.forwarded().items()))
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Admission:
    """An admitted browser: until when its credentials hold (epoch seconds), if they expire."""

    expires_at: float | None = None
    # Who it is, as far as the gate knows (a token's subject, a digest of its credentials);
    # a recovered session goes only to the same holder. None: the gate does not know.
    holder: str | None = None
    # At expires_at the gate is asked again (auth.recheck_interval seconds later each
    # time), rather than the browser dropped: credentials revoked meanwhile take effect.
    recheck: float | None = None


async def renewal(
    gate: Gate, credentials: Credentials, admission: Admission, timeout: float
) -> Admission | str:
    """At an admission's ``expires_at``: the next admission, or why its browser must go
    (``credentials_expired``, ``credentials_revoked``: the gate refuses them now). A
    recheck the gate does not answer keeps the browser until the next one: an outage of
    the endpoint that checks credentials does not disconnect every agent."""
    if admission.recheck is None:
        return "credentials_expired"
    try:
        async with asyncio.timeout(timeout):
            return await gate.admit(credentials)
    except TimeoutError:
        unanswered = "auth_unavailable"
    except Refused as exc:
        if not exc.reason.endswith("_unavailable"):
            return "credentials_revoked"
        unanswered = exc.reason
    except Exception:  # a check that broke: as at connect, it refuses
        log.exception("browser_recheck_failed")
        return "credentials_revoked"
    log.info("browser_recheck_unanswered", reason=unanswered)
    return replace(admission, expires_at=time.time() + admission.recheck)


class Gate(Protocol):
    """Admits a browser at connect, or raises :class:`Refused`."""

    async def admit(self, credentials: Credentials) -> Admission: ...


class OpenGate:
    """``auth.mode: none``: every browser is admitted, as by the backend's own socket."""

    async def admit(self, credentials: Credentials) -> Admission:
        return Admission()


class JwtGate:
    """``auth.mode: jwt``: a signed token with the configured audience and issuer, and an
    expiry (the browser is disconnected when it passes)."""

    def __init__(self, settings: AuthSettings, clock: Callable[[], float] = time.monotonic) -> None:
        jwt_settings = settings.jwt
        self._algorithms = list(jwt_settings.algorithms)
        self._key = jwt_settings.key()
        self._jwks = (
            jwt.PyJWKClient(
                jwt_settings.jwks_url,
                cache_keys=True,
                lifespan=int(jwt_settings.jwks_cache),
                timeout=int(max(1, settings.timeout)),
            )
            if jwt_settings.jwks_url
            else None
        )
        # PyJWKClient fetches with urllib, so off the loop, in a thread of its own: a key set
        # URL that hangs must not take the threads DNS lookups run in.
        self._jwks_thread = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="jwks") if self._jwks else None
        )
        self._jwks_down_until = 0.0
        self._clock = clock
        self._audience = jwt_settings.audience
        self._issuer = jwt_settings.issuer
        self._leeway = jwt_settings.leeway
        self._required = ["exp"] if jwt_settings.require_expiry else []

    async def admit(self, credentials: Credentials) -> Admission:
        token = credentials.token
        if not token:
            raise Refused("token_missing")
        try:
            key: Any = self._key if self._jwks is None else await self._signing_key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": self._required},
            )
        except jwt.ExpiredSignatureError:
            raise Refused("token_expired") from None
        except jwt.InvalidAudienceError:
            raise Refused("token_audience") from None
        except jwt.InvalidIssuerError:
            raise Refused("token_issuer") from None
        except (jwt.PyJWTError, ValueError, TypeError):  # whatever else makes it unusable
            raise Refused("token_invalid") from None
        times = [claims.get(name) for name in ("exp", "nbf", "iat") if name in claims]
        if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in times):
            # RFC 7519: a NumericDate is a JSON number; PyJWT also reads "9999999999"
            # as one, and such an expiry would not be enforced while connected
            raise Refused("token_invalid")
        expires = claims.get("exp")
        subject = claims.get("sub")
        return Admission(
            float(expires) + self._leeway if isinstance(expires, int | float) else None,
            holder=f"sub:{subject}" if isinstance(subject, str) else credentials.fingerprint(),
        )

    async def _signing_key(self, token: str) -> Any:
        """The key set's key for ``token``; while the key set URL fails, for
        ``JWKS_RETRY_AFTER`` seconds after each failure, tokens are refused without asking
        it again."""
        assert self._jwks is not None
        if self._clock() < self._jwks_down_until:
            raise Refused("jwks_unavailable")
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(
                self._jwks_thread, self._jwks.get_signing_key_from_jwt, token
            )
        except jwt.PyJWKClientConnectionError as exc:
            self._jwks_down_until = self._clock() + JWKS_RETRY_AFTER
            log.warning("jwks_unavailable", error=str(exc))
            raise Refused("jwks_unavailable") from None
        return found.key


class BackendGate:
    """``auth.mode: backend``: the browser's credentials are sent to a backend endpoint;
    a 2xx admits it, until they are asked about again ``recheck_interval`` seconds later
    (a tenth more or less: browsers that connected together are not all asked at once).
    Answers are cached for ``cache_ttl`` seconds per credentials."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: AuthSettings,
        jitter: Callable[[], float] = lambda: random.uniform(0.9, 1.1),
    ) -> None:
        assert settings.backend_url is not None  # the settings check it for this mode
        self._recheck = settings.recheck_interval or None
        self._jitter = jitter
        self._session = session
        self._url = settings.backend_url
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)
        self._answers: TTLCache[str, bool] = TTLCache(_CACHE_SIZE, settings.cache_ttl)

    async def admit(self, credentials: Credentials) -> Admission:
        headers = credentials.forwarded()
        if not headers:
            raise Refused("credentials_missing")
        key = credentials.fingerprint()
        allowed = self._answers.get(key)
        if allowed is None:
            allowed = await _ask(self._session, self._url, headers, self._timeout, "auth")
            self._answers[key] = allowed
        if not allowed:
            raise Refused("backend_refused")
        if self._recheck is None:
            return Admission(holder=key)
        recheck = self._recheck * self._jitter()
        return Admission(time.time() + recheck, holder=key, recheck=recheck)


class RoomAccess:
    """Whether a browser may read a room: ``GET /rooms/<id>`` with its own credentials.

    A 2xx allows it; any other answer refuses it; no answer refuses it too (the room is
    the backend's to open). Answers are cached per credentials and room.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        room_url: Callable[[str], str | URL],
        timeout: float,
        cache_ttl: float,
    ) -> None:
        self._session = session
        self._room_url = room_url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._answers: TTLCache[tuple[str, str], bool] = TTLCache(_CACHE_SIZE, cache_ttl)

    async def check(self, credentials: Credentials, room_id: str) -> None:
        """Return if the browser may join ``room_id``; raise :class:`Refused` if not."""
        key = (credentials.fingerprint(), room_id)
        allowed = self._answers.get(key)
        if allowed is None:
            allowed = await _ask(
                self._session,
                self._room_url(room_id),
                credentials.forwarded(),
                self._timeout,
                "room_access",
            )
            self._answers[key] = allowed
        if not allowed:
            raise Refused("room_forbidden")


async def _ask(
    session: aiohttp.ClientSession,
    url: str | URL,
    headers: dict[str, str],
    timeout: aiohttp.ClientTimeout,
    what: str,
) -> bool:
    """Whether the backend answers 2xx to a GET with these credentials; raises
    :class:`Refused` (``<what>_unavailable``) when it does not answer at all."""
    try:
        async with session.get(
            url, headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            return 200 <= response.status < 300
    except (TimeoutError, aiohttp.ClientError) as exc:
        log.warning(f"{what}_unavailable", error=str(exc) or type(exc).__name__)
        raise Refused(f"{what}_unavailable") from None
    except ValueError:  # credentials no HTTP header can carry (a line break, say)
        raise Refused("credentials_invalid") from None


def make_gate(settings: AuthSettings, session: aiohttp.ClientSession) -> Gate:
    """The gate ``settings.mode`` names."""
    if settings.mode == "jwt":
        return JwtGate(settings)
    if settings.mode == "backend":
        return BackendGate(session, settings)
    return OpenGate()
