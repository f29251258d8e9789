"""One typed settings object: defaults, then a YAML file, then ``ENRICHER_*``, then flags."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import yaml
from jwt.api_jws import get_algorithm_by_name
from jwt.exceptions import InvalidKeyError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from .join_types import JoinLimits, NewRoomMode


class ConfigError(Exception):
    """A setting that cannot be used; the message names it and says what is wrong."""


def split_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as a host and a port number."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _address(value: str) -> str:
    split_address(value)
    return value


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError(f"expected an http(s):// or ws(s):// URL with a host, got {value!r}")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in {value!r}") from exc
    return value


def _ca_file(value: Path) -> Path:
    try:
        ssl.create_default_context(cafile=str(value))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"not a readable PEM CA bundle: {value} ({exc})") from None
    return value


Address = Annotated[str, AfterValidator(_address)]
CaFile = Annotated[Path, AfterValidator(_ca_file)]
Url = Annotated[str, AfterValidator(_url)]
Seconds = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UpstreamSettings(_Section):
    mode: Literal["transparent", "shared"] = "transparent"
    url: Url = "http://127.0.0.1:3000"
    socketio_path: str = "socket.io"
    headers: dict[str, str] = {}
    query: dict[str, str] = {}
    auth: dict[str, Any] | None = None
    transports: list[Literal["websocket", "polling"]] = ["polling", "websocket"]
    connect_timeout: Seconds = 5.0
    reconnect_delay: Seconds = 0.5
    reconnect_delay_max: Seconds = 10.0
    ack_timeout: Seconds = 10.0
    clock_skew: Annotated[float, Field(ge=0)] = 2.0
    tls_verify: bool = True
    tls_ca_file: CaFile | None = None


class RestSettings(_Section):
    url: Url | None = None
    headers: dict[str, str] = {}
    timeout: Seconds = 2.0
    max_in_flight: Annotated[int, Field(ge=1)] = 64
    retry_delay: Seconds = 0.25
    breaker_failures: Annotated[int, Field(ge=1)] = 5
    breaker_cooldown: Seconds = 5.0


class StateSettings(_Section):
    max_pending_rooms: Annotated[int, Field(ge=1)] = 10_000
    max_known_rooms: Annotated[int, Field(ge=1)] = 200_000
    known_room_ttl: Seconds = 3600.0
    max_message_ids: Annotated[int, Field(ge=1)] = 200_000
    message_id_ttl: Seconds = 600.0
    early_message_ttl: Seconds = 30.0


class WebSocketSettings(_Section):
    compression: bool = False
    direct_broadcast: bool = True
    max_queued_events: Annotated[int, Field(ge=1)] = 1000


def as_http(url: str) -> str:
    """The same address for HTTP requests: a Socket.IO ``ws://`` URL as ``http://``,
    ``wss://`` as ``https://``."""
    scheme, sep, rest = url.partition("://")
    return {"ws": "http", "wss": "https"}.get(scheme, scheme) + sep + rest


def _network(value: str) -> str:
    ipaddress.ip_network(value, strict=False)  # ValueError names the bad value
    return value


def _path_prefix(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"a path prefix starts with /, got {value!r}")
    return value


def _no_credentials(value: str | None) -> str | None:
    if value is not None and (urlsplit(value).username or urlsplit(value).password):
        raise ValueError(
            "no credentials in http.url: they would go with every browser's request "
            "(the backend checks the browser's own)"
        )
    return value


class HttpSettings(_Section):
    enabled: bool = True
    url: Annotated[Url | None, AfterValidator(_no_credentials)] = None
    paths: list[Annotated[str, AfterValidator(_path_prefix)]] = ["/"]
    auth: Literal["backend", "edge"] = "backend"
    connect_timeout: Seconds = 5.0
    read_timeout: Seconds = 60.0
    max_connections: Annotated[int, Field(ge=1)] = 256
    # One client's relayed requests at once (past: 429): no client takes the whole pool.
    max_requests_per_client: Annotated[int, Field(ge=1)] = 64
    # A request body slower than this on average after upload_grace is cut short (408).
    min_upload_rate: Annotated[float, Field(ge=0)] = 1024.0
    upload_grace: Seconds = 10.0
    trusted_proxies: list[Annotated[str, AfterValidator(_network)]] = []


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class RecoverySettings(_Section):
    enabled: bool = True
    max_disconnection: Seconds = 120.0
    max_events: Annotated[int, Field(ge=1)] = 10_000
    store: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://localhost:6379/0"

    @model_validator(mode="after")
    def _redis_url(self) -> RecoverySettings:
        if self.store == "redis" and not self.redis_url.startswith(REDIS_SCHEMES):
            raise ValueError(
                "recovery.store is redis: recovery.redis_url must be a redis://, rediss:// "
                "or unix:// URL"
            )
        return self


class AdminUiSettings(_Section):
    enabled: bool = False
    username: str = "admin"
    password: SecretStr = SecretStr("")
    origins: list[str] = ["https://admin.socket.io"]

    @model_validator(mode="after")
    def _credentials(self) -> AdminUiSettings:
        if self.enabled and len(self.password.get_secret_value()) < 12:
            raise ValueError(
                "admin_ui.enabled needs admin_ui.password, of 12 characters at least "
                "(ENRICHER_ADMIN_UI__PASSWORD): the Admin UI shows who is connected"
            )
        if self.enabled and not self.username:
            raise ValueError("admin_ui.enabled needs an admin_ui.username")
        return self


JwtAlgorithm = Literal[
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
]


class JwtSettings(_Section):
    algorithms: Annotated[list[JwtAlgorithm], Field(min_length=1)] = ["HS256"]
    secret: SecretStr | None = None
    public_key: str | None = None
    jwks_url: Url | None = None
    jwks_cache: Seconds = 300.0
    audience: str | None = None
    issuer: str | None = None
    leeway: Annotated[float, Field(ge=0)] = 5.0
    require_expiry: bool = True

    def key(self) -> str | None:
        """The key tokens are checked with: the secret for HS*, else the public key (or
        none, the key set's keys)."""
        if self.algorithms[0].startswith("HS"):
            return self.secret.get_secret_value() if self.secret else None
        return self.public_key

    def problem(self) -> str | None:
        """What keeps these settings from checking a token, if anything."""
        hmac = {a.startswith("HS") for a in self.algorithms}
        if len(hmac) > 1:
            return "auth.jwt.algorithms: HS* and public-key algorithms cannot be mixed"
        if hmac == {True} and self.secret is None:
            return "HS* algorithms need auth.jwt.secret"
        if hmac == {False} and not (self.public_key or self.jwks_url):
            return "public-key algorithms need auth.jwt.public_key or auth.jwt.jwks_url"
        key = self.key()
        for name in self.algorithms if key is not None else ():
            try:
                get_algorithm_by_name(name).prepare_key(key)
            except (InvalidKeyError, ValueError, TypeError) as exc:
                return f"the key does not fit {name}: {exc}"
        return None


class AuthSettings(_Section):
    mode: Literal["none", "jwt", "backend"] = "none"
    jwt: JwtSettings = JwtSettings()
    backend_url: Url | None = None
    timeout: Seconds = 2.0
    cache_ttl: Seconds = 10.0
    # auth.mode backend: seconds between checks of a connected browser's credentials (0:
    # checked at connect only); refused then, it is disconnected.
    recheck_interval: Annotated[float, Field(ge=0)] = 60.0
    room_check: bool = False

    @model_validator(mode="after")
    def _mode_has_what_it_needs(self) -> AuthSettings:
        problem = self.jwt.problem() if self.mode == "jwt" else None
        if problem:
            raise ValueError(f"mode jwt: {problem}")
        if self.mode == "backend" and self.backend_url is None:
            raise ValueError("mode backend needs auth.backend_url")
        return self


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(BaseSettings):
    """Everything enricher can be told; ``config/default.yaml`` documents each field."""

    model_config = SettingsConfigDict(
        env_prefix="ENRICHER_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )
    config_file: ClassVar[Path | None] = None

    upstream: UpstreamSettings = UpstreamSettings()
    rest: RestSettings = RestSettings()
    listen: Address = "0.0.0.0:8080"
    admin_listen: Address = "127.0.0.1:9090"
    socketio_path: str = "socket.io"
    cors_origins: list[str] | Literal["*"] = []
    shutdown_grace: Seconds = 10.0
    hold_timeout: Seconds = 3.0
    event_grace: Seconds = 0.2
    new_room_mode: NewRoomMode = NewRoomMode.ENRICHED
    client_events: list[str] | Literal["*"] = "*"
    client_event_rate: Annotated[float, Field(ge=0)] = 20.0
    client_event_burst: Annotated[int, Field(ge=1)] = 40
    # Browser connections at once from one client address (0: any number); past it 403.
    max_connections_per_client: Annotated[int, Field(ge=0)] = 0
    # Before upstream.mode: per_browser is transparent mode, shared the shared one.
    client_event_upstream: Literal["shared", "per_browser"] | None = None
    auth: AuthSettings = AuthSettings()
    max_payload_bytes: Annotated[int, Field(ge=1024)] = 1_000_000
    ping_interval: Seconds = 25.0
    ping_timeout: Seconds = 20.0
    websocket: WebSocketSettings = WebSocketSettings()
    http: HttpSettings = HttpSettings()
    recovery: RecoverySettings = RecoverySettings()
    admin_ui: AdminUiSettings = AdminUiSettings()
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    state: StateSettings = StateSettings()
    log: LogSettings = LogSettings()

    @model_validator(mode="after")
    def _former_mode_setting(self) -> Settings:
        former = self.client_event_upstream
        if former is not None and "mode" not in self.upstream.model_fields_set:
            self.upstream.mode = "transparent" if former == "per_browser" else "shared"
        if self.upstream.mode == "transparent" and self.recovery.store == "redis":
            raise ValueError(
                "recovery.store redis needs upstream.mode shared: in transparent mode each "
                "browser's session is its own backend connection, held by one process"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=cls.config_file))
        return tuple(sources)

    @property
    def rest_url(self) -> str:
        return self.rest.url or as_http(self.upstream.url)

    @property
    def http_url(self) -> str:
        """Where the pass-through sends browsers' HTTP requests: ``http.url``, else the
        backend's Socket.IO address (the one base URL a frontend had)."""
        return self.http.url or self.upstream.url

    def join_limits(self) -> JoinLimits:
        return JoinLimits(
            hold_timeout=self.hold_timeout,
            event_grace=min(self.event_grace, self.hold_timeout),
            retry_delay=self.rest.retry_delay,
            max_pending_rooms=self.state.max_pending_rooms,
            max_known_rooms=self.state.max_known_rooms,
            known_room_ttl=self.state.known_room_ttl,
            max_message_ids=self.state.max_message_ids,
            message_id_ttl=self.state.message_id_ttl,
            early_message_ttl=self.state.early_message_ttl,
            clock_skew=self.upstream.clock_skew,
        )


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``config_file``, the environment and ``overrides`` (dotted names).

    Raises :class:`ConfigError` with one line naming every bad setting.
    """
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"--config: no such file: {config_file}")
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        target = nested
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    settings_cls = type("Settings", (Settings,), {"config_file": config_file})
    try:
        settings: Settings = settings_cls(**nested)
        return settings
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"bad setting: {problems}") from None
    except (yaml.YAMLError, ValueError, TypeError) as exc:  # a file that is not YAML settings
        reason = " ".join(str(exc).split())
        raise ConfigError(f"--config {config_file}: not a YAML settings file: {reason}") from None
