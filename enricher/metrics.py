"""Prometheus metrics. Labels stay bounded: never a room id, a user or a free event name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

KNOWN_EVENTS = frozenset(
    {
        "new_room",
        "new_message",
        "room:new_message",
        "new_room_complete",
        "room:join",
        "room:leave",
        "rest_room",
        "enricher:resync",
    }
)
SNAPSHOT_REASONS = frozenset(
    {
        "rest_pending",
        "no_message",
        "capacity",
        "shutdown",
        "rest_timeout",
        "rest_connection",
        "rest_tls",
        "rest_invalid_body",
        "rest_status_3xx",
        "rest_status_4xx",
        "rest_not_found",
        "rest_status_5xx",
        "rest_circuit_open",
    }
)


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Label values exported at 0 from the start, so that a rate, a dashboard panel or an alert
# has a series before the first one happens (a counter's child otherwise appears with it).
KNOWN_OUTCOMES = {
    "recoveries": (
        "recovered",
        "unknown_session",
        "expired",
        "events_dropped",
        "too_many_missed",
        "unknown_offset",
        "session_in_use",
        "refused",
        "store_unavailable",
    ),
    "browsers_dropped": ("backlog", "credentials_expired", "credentials_revoked"),
    "admin_ui_logins": ("accepted", "refused"),
    "browser_admissions": (
        "admitted",
        "origin",
        "too_many_connections",
        "token_missing",
        "token_invalid",
        "token_expired",
        "token_audience",
        "token_issuer",
        "jwks_unavailable",
        "credentials_missing",
        "credentials_invalid",
        "backend_refused",
        "auth_unavailable",
        "auth_error",
        "too_many_attempts",
    ),
    "backend_connects": ("connected", "unreachable", "timeout", "tls", "refused", "no_open_packet"),
    "room_checks": (
        "recovered",
        "old",
        "undated",
        "not_found",
        "rest_failed",
        "capacity",
        "shutdown",
    ),
    "resyncs": ("upstream_reconnected", "recovery_failed"),
    "http_upstream_errors": ("unreachable", "timeout", "error", "broken"),
}


def event_label(event: str) -> str:
    """An event name fit for a label: the product's own events by name, the rest as ``other``."""
    return event if event in KNOWN_EVENTS else "other"


def _bounded(value: object, allowed: frozenset[str]) -> str:
    return value if isinstance(value, str) and value in allowed else "other"


class _Sizes(Collector):
    """Reads the sizes of the join's tables when Prometheus scrapes."""

    def __init__(self, sizes: Callable[[], dict[str, int]]) -> None:
        self._sizes = sizes

    def collect(self):  # type: ignore[no-untyped-def]
        family = GaugeMetricFamily(
            "enricher_state_entries", "Entries in each bounded internal table.", labels=["table"]
        )
        for table, size in self._sizes().items():
            family.add_metric([table], size)
        yield family


class Metrics:
    """Every metric enricher exports, on its own registry."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self._children: dict[tuple[Any, ...], Any] = {}
        # process_* (CPU, memory, file descriptors), python_gc_*, python_info
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        self.info = Gauge(
            "enricher_info",
            "Always 1; its labels say how this process runs: version, mode (upstream.mode: "
            "transparent or shared) and recovery_store (none, memory or redis). Alerts and "
            "dashboards join on it to tell the modes apart.",
            ["version", "mode", "recovery_store"],
            registry=registry,
        )
        self.upstream_connected = Gauge(
            "enricher_upstream_connected",
            "1 while the upstream Socket.IO connection is up.",
            registry=registry,
        )
        self.upstream_connects = Counter(
            "enricher_upstream_connects",
            "Successful upstream connections, the first one included.",
            registry=registry,
        )
        self.upstream_disconnects = Counter(
            "enricher_upstream_disconnects",
            "Upstream connections lost (each is followed by a reconnection attempt).",
            registry=registry,
        )
        self.events_received = Counter(
            "enricher_events_received",
            "Events received from the backend, by event name.",
            ["event"],
            registry=registry,
        )
        self.events_emitted = Counter(
            "enricher_events_emitted",
            "Events emitted to browsers (one per emit call, not per browser), by event name.",
            ["event"],
            registry=registry,
        )
        self.client_events = Counter(
            "enricher_client_events",
            "Browser events, by event name and what became of them.",
            ["event", "outcome"],
            registry=registry,
        )
        self.snapshots = Counter(
            "enricher_snapshots",
            "new_room_complete snapshots sent, by enrichment and why a partial one was sent.",
            ["enrichment", "reason"],
            registry=registry,
        )
        self.hold_seconds = Histogram(
            "enricher_snapshot_hold_seconds",
            "Time from a new room being seen to its snapshot being sent.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5),
            registry=registry,
        )
        self.rest_requests = Counter(
            "enricher_rest_requests",
            "GET /rooms/<id> requests to the backend, by outcome (status class or error).",
            ["outcome"],
            registry=registry,
        )
        self.rest_seconds = Histogram(
            "enricher_rest_request_duration_seconds",
            "Duration of GET /rooms/<id> requests to the backend.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
            registry=registry,
        )
        self.rest_circuit_open = Gauge(
            "enricher_rest_circuit_open",
            "1 while GET /rooms/<id> is not attempted because the backend kept failing.",
            registry=registry,
        )
        self.rest_in_flight = Gauge(
            "enricher_rest_requests_in_flight",
            "GET /rooms/<id> requests under way.",
            registry=registry,
        )
        self.duplicates = Counter(
            "enricher_duplicates_suppressed",
            "Upstream events not forwarded because browsers already had them, by event name.",
            ["event"],
            registry=registry,
        )
        self.rejected = Counter(
            "enricher_payloads_rejected",
            "Payloads that could not be used as they came (forwarded degraded), by reason.",
            ["event", "reason"],
            registry=registry,
        )
        self.warnings = Counter(
            "enricher_payload_fields_defaulted",
            "Payload fields that were missing or odd and got a default, by event name.",
            ["event"],
            registry=registry,
        )
        self.browsers = Gauge(
            "enricher_browsers_connected", "Browsers connected now.", registry=registry
        )
        self.rooms_held = Gauge(
            "enricher_rooms_held",
            "New rooms held now, waiting for their snapshot.",
            registry=registry,
        )
        self.emit_seconds = Histogram(
            "enricher_emit_duration_seconds",
            "Time to hand one event to every browser it goes to (the fan-out), by event name.",
            ["event"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=registry,
        )
        self.deliveries = Counter(
            "enricher_deliveries",
            "Events handed to browsers, one per browser, by path: 'direct' (the frame written "
            "straight to an idle WebSocket) or 'queued' (python-socketio's per-socket queue).",
            ["path"],
            registry=registry,
        )
        self.recoveries = Counter(
            "enricher_recoveries",
            "Browsers that came back presenting their session (Socket.IO connection state "
            "recovery), by outcome: 'recovered', or why not ('unknown_session', 'expired', "
            "'events_dropped', 'too_many_missed', 'unknown_offset', 'session_in_use', "
            "'refused', 'store_unavailable').",
            ["outcome"],
            registry=registry,
        )
        self.resyncs = Counter(
            "enricher_resyncs",
            "enricher:resync events sent to every browser, by reason ('upstream_reconnected': "
            "the backend connection came back, events in between are lost).",
            ["reason"],
            registry=registry,
        )
        self.browsers_dropped = Counter(
            "enricher_browsers_dropped",
            "Browsers disconnected by enricher, by reason: 'backlog' (it stopped reading and "
            "websocket.max_queued_events events waited for it), 'credentials_expired' (its "
            "token's expiry passed; it reconnects with its credentials checked again), "
            "'credentials_revoked' (auth.mode backend refused them at a recheck).",
            ["reason"],
            registry=registry,
        )
        self.browser_admissions = Counter(
            "enricher_browser_admissions",
            "Browser connections checked by cors_origins, max_connections_per_client and "
            "auth.mode: 'admitted', or the reason of the refusal (origin: a page of an origin "
            "not allowed, too_many_connections: from one client address, token_missing, "
            "token_invalid, token_expired, token_audience, token_issuer, jwks_unavailable, "
            "credentials_missing, credentials_invalid, backend_refused, auth_unavailable, "
            "auth_error, too_many_attempts).",
            ["outcome"],
            registry=registry,
        )
        self.admin_ui_logins = Counter(
            "enricher_admin_ui_logins",
            "Admin UI pages that logged in on the admin listener (admin_ui): 'accepted', or "
            "'refused' (a wrong or missing user name or password).",
            ["outcome"],
            registry=registry,
        )
        self.browser_upstream_connections = Gauge(
            "enricher_browser_upstream_connections",
            "Backend connections opened for browsers (each browser's own: transparent mode).",
            registry=registry,
        )
        self.backend_connects = Counter(
            "enricher_backend_connects",
            "Browsers' own backend connections (transparent mode), by outcome: 'connected', "
            "or why not ('unreachable', 'timeout', 'tls', 'refused': an HTTP answer, "
            "'no_open_packet': not engine.io).",
            ["outcome"],
            registry=registry,
        )
        self.room_checks = Counter(
            "enricher_room_checks",
            "Rooms never seen whose message came after a backend reconnection, asked of REST, "
            "by outcome: 'recovered' (created during the outage: its new_room was lost, the "
            "snapshot is sent), 'old', 'undated', 'not_found', 'rest_failed', 'capacity', 'shutdown'.",
            ["outcome"],
            registry=registry,
        )
        self.recovery_store_up = Gauge(
            "enricher_recovery_store_up",
            "1 while the shared store of recovery.store: redis answers; 0 while it does not "
            "(events then go to this replica's browsers directly, none recoverable).",
            registry=registry,
        )
        self.recovery_store_direct = Counter(
            "enricher_recovery_store_direct_events",
            "Broadcasts delivered directly because the shared store (recovery.store: redis) "
            "could not be reached: kept nowhere, browsers away meanwhile get enricher:resync.",
            registry=registry,
        )
        self.http_requests = Counter(
            "enricher_http_requests",
            "HTTP requests on the public address other than Socket.IO (relayed to the "
            "backend, or answered by enricher: 400, 401, 404, 408, 429, 502, 504; 499 when the browser "
            "left before its answer began), by method and status class.",
            ["method", "status_class"],
            registry=registry,
        )
        self.http_seconds = Histogram(
            "enricher_http_request_duration_seconds",
            "Time from a relayed request's arrival to the backend's answer headers (or to "
            "the 502/504 that replaced them); a long download's body is not in it.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.http_bytes = Counter(
            "enricher_http_body_bytes",
            "Body bytes relayed: 'in' from browsers to the backend, 'out' back to browsers.",
            ["direction"],
            registry=registry,
        )
        self.http_upstream_errors = Counter(
            "enricher_http_upstream_errors",
            "Relayed requests the backend failed, by reason: 'unreachable' (502), 'timeout' "
            "(504: no answer within http.connect_timeout / http.read_timeout), 'error' "
            "(502: a broken answer), 'broken' (the answer stopped after it had begun: the "
            "browser's connection is cut).",
            ["reason"],
            registry=registry,
        )
        self.http_in_flight = Gauge(
            "enricher_http_requests_in_flight",
            "Relayed HTTP requests under way (streaming downloads and uploads included).",
            registry=registry,
        )
        self._direct = self.deliveries.labels("direct")
        self._queued = self.deliveries.labels("queued")
        for name, outcomes in KNOWN_OUTCOMES.items():
            for outcome in outcomes:
                getattr(self, name).labels(outcome)
        self.snapshots.labels("complete", "")

    def describe(self, version: str, mode: str, recovery_store: str) -> None:
        """Say how this process runs (``enricher_info``)."""
        self.info.labels(version, mode, recovery_store).set(1)

    def received(self, event: str) -> None:
        """One event from the backend (a label's child looked up once: it is per event)."""
        self._child(self.events_received, event_label(event)).inc()

    def emitted(self, event: str) -> None:
        self._child(self.events_emitted, event_label(event)).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def delivered(self, direct: int, queued: int) -> None:
        if direct:
            self._direct.inc(direct)
        if queued:
            self._queued.inc(queued)

    def watch_sizes(self, sizes: Callable[[], dict[str, int]]) -> None:
        """Export the sizes of the internal tables: the join's (``rooms held now`` is
        ``pending_rooms``) and those kept per browser."""
        self.registry.register(_Sizes(sizes))

    def snapshot_sent(self, enrichment: str, reason: object, held_seconds: float) -> None:
        label = "" if reason is None else _bounded(reason, SNAPSHOT_REASONS)
        self.snapshots.labels(enrichment, label).inc()
        self.hold_seconds.observe(held_seconds)

    def upstream_state(self, connected: bool) -> None:
        self.upstream_connected.set(int(connected))
        (self.upstream_connects if connected else self.upstream_disconnects).inc()

    def rest_request(self, outcome: str, seconds: float | None) -> None:
        """A ``GET /rooms/<id>``; ``seconds`` is None for one the circuit breaker stopped."""
        self.rest_requests.labels(outcome).inc()
        if seconds is not None:
            self.rest_seconds.observe(seconds)

    def payload_rejected(self, event: str, reason: str) -> None:
        self.rejected.labels(event_label(event), reason).inc()

    def http_answered(self, method: str, status: int, seconds: float | None) -> None:
        """A request on the public address answered (``seconds`` None: by enricher itself,
        without asking the backend)."""
        self.http_requests.labels(_bounded(method, HTTP_METHODS), f"{status // 100}xx").inc()
        if seconds is not None:
            self.http_seconds.observe(seconds)

    def http_body(self, direction: str, size: int) -> None:
        self.http_bytes.labels(direction).inc(size)

    def http_upstream_error(self, reason: str) -> None:
        self.http_upstream_errors.labels(reason).inc()
