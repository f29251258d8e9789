"""The dashboard and the alerts against a real Prometheus: two real enricher processes (the
default transparent mode, and shared mode with recovery.store redis) in front of the Node
backend stub, real socket.io-client browsers, a short load with the faults an operator
watches for; a real Prometheus scrapes both every second and evaluates the alert rules.
Every query of every panel, and every alert's expression, must then return series with
the labels its legend or annotations name: no panel on a metric that does not exist.

``ENRICHER_DASHBOARD_PICTURE=docs/dashboard.png`` also draws the dashboard from that data
(tests/e2e/dashboard_picture.py), after a longer load."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from ..tools import PrometheusServer, RedisServer
from .conftest import Backend, Browsers, BrowsersFactory, Enricher, EnricherFactory
from .dashboard_picture import render

pytestmark = [pytest.mark.e2e, pytest.mark.enricher]

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "helm" / "enricher" / "files" / "grafana-dashboard.json"
RULES = ROOT / "helm" / "enricher" / "files" / "prometheus-rules.yaml"
JOB = "enricher"
DOWN_ALERTS = {
    "EnricherBackendConnectionDown",
    "EnricherBackendConnectsFailing",
    "EnricherRecoveryStoreDown",
    "EnricherRelayedRequestsFailing",
    "EnricherAdmissionCheckFailing",
}
WINDOW = "5m"  # for $__rate_interval: the whole test, scraped every second
Json = dict[str, Any]


def concrete(expr: str) -> str:
    """A dashboard query as Grafana sends it with every job and instance chosen."""
    return expr.replace("$job", JOB).replace("$instance", ".+").replace("$__rate_interval", WINDOW)


def signal(expr: str) -> str:
    """An alert's expression without its threshold: what it compares, per target."""
    return re.sub(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.]+(?=\s*(and\b|$))", "", expr.strip())


def legend_labels(legend: str) -> set[str]:
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))


def targets(dashboard: Json) -> list[tuple[Json, Json]]:
    return [(p, t) for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]


def alerts() -> list[Json]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


# Rounds of load, each scraped twice at least: rates to compute; for the picture, a few
# minutes of them.
ROUNDS = 30 if os.environ.get("ENRICHER_DASHBOARD_PICTURE") else 4


async def load(
    backend: Backend, direct: Enricher, shared: Enricher, groups: list[Browsers], round: int
) -> None:
    """One round of what an operator's dashboard shows on a working day, with its faults:
    new customers (one whose GET /rooms/<id> fails, one whose message comes twice), agent
    replies, room joins, a browser over its event rate, payloads that are not the
    contract's, REST calls through the pass-through (found and not), and a browser of each
    enricher coming back after a blip."""
    rooms = []
    for i, knobs in enumerate([{}, {}, {"duplicate_message": True}, {"rest_fail": "500"}, {}]):
        phone = f"6281500{round:02d}{i:02d}"
        sent = await backend.customer(phone, f"Pelanggan {round}.{i}", f"halo {i}", **knobs)
        rooms.append(sent["room_id"])
        for group in groups:
            await group.wait_all("new_room_complete", sent["room_id"])
        reply = await backend.agent_reply(sent["room_id"], f"balasan {i}")
        for group in groups:
            await group.wait_all("new_message", reply)
    await backend.emit("new_room", "not a room")
    await backend.emit(
        "new_message", {"room_id": rooms[0], "id": f"odd-{round}", "content_text": 7}
    )
    for group in groups:
        answer = await group.emit(0, "room:join", {"room_id": rooms[0]})
        assert "error" not in answer, answer
    for _ in range(3):  # its burst, and more
        await groups[1].emit(1, "agent:typing", {"room_id": rooms[0]}, ack=False)
    refused = await groups[1].emit(1, "agent:typing", {"room_id": rooms[0]})
    assert refused.get("args") == [{"error": "rate_limited", "event": "agent:typing"}], refused
    async with aiohttp.ClientSession() as http:
        for proxy in (direct, shared):
            for path, status in ((f"/rooms/{rooms[0]}", 200), ("/no-such-route", 404)):
                async with http.get(proxy.public_url + path) as resp:
                    assert resp.status == status, f"{path}: {resp.status}"
    for group in groups:
        await group.cut(1)
        await group.cut(1, reconnect=True)
        await group.wait_connects(1, round + 2)


async def scraped(prometheus: PrometheusServer, times: int = 2, timeout: float = 30) -> None:
    """Until Prometheus has scraped both enricher processes ``times`` times from now."""
    since = time.time()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        window = math.ceil(time.time() - since) + 1
        result = await prometheus.query(f'up{{job="{JOB}"}}[{window}s]')
        counts = [sum(float(t) > since for t, _ in r["values"]) for r in result]
        if len(counts) == 2 and min(counts) >= times:
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"Prometheus did not scrape both enricher processes: {prometheus.log()}")


async def test_every_dashboard_and_alert_query_returns_data_from_a_real_prometheus(
    backend: Backend,
    make_enricher: EnricherFactory,
    browsers: BrowsersFactory,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    direct = await make_enricher(backend, ENRICHER_HOLD_TIMEOUT="1.0")
    shared = await make_enricher(
        backend,
        ENRICHER_HOLD_TIMEOUT="1.0",
        ENRICHER_UPSTREAM__MODE="shared",
        ENRICHER_RECOVERY__STORE="redis",
        ENRICHER_RECOVERY__REDIS_URL=redis_server.url,
        ENRICHER_CLIENT_EVENT_RATE="0.5",
        ENRICHER_CLIENT_EVENT_BURST="2",
    )
    prometheus = PrometheusServer(
        tmp_path,
        [f"127.0.0.1:{direct.admin_port}", f"127.0.0.1:{shared.admin_port}"],
        RULES,
        job=JOB,
    )
    prometheus.start()
    try:
        await prometheus.ready()
        started = time.time()
        context = [backend.child, direct.child, shared.child]
        groups = [
            await browsers(direct.public_url, 3, context=context),
            await browsers(shared.public_url, 3, context=context),
        ]
        for round in range(ROUNDS):
            await load(backend, direct, shared, groups, round)
            await scraped(prometheus)
        dashboard: Json = json.loads(DASHBOARD.read_text())

        empty, unlabelled, no_value = [], [], []
        for panel, target in targets(dashboard):
            name = f"{panel['title']} [{target['refId']}] {target['expr']}"
            result = await prometheus.query(concrete(target["expr"]))
            if not result:
                empty.append(name)
                continue
            wanted = legend_labels(target["legendFormat"])
            # (a label whose value is "" is no label to Prometheus: complete snapshots' reason)
            if any(all(label not in series["metric"] for series in result) for label in wanted):
                unlabelled.append(f"{name}: {[s['metric'] for s in result]}")
            if not any(math.isfinite(float(series["value"][1])) for series in result):
                no_value.append(f"{name}: {result}")
        assert empty == [], "panels without data:\n" + "\n".join(empty)
        assert unlabelled == [], "series without their legend's labels:\n" + "\n".join(unlabelled)
        assert no_value == [], "panels with no number (NaN only):\n" + "\n".join(no_value)

        alerting_empty = []
        for rule in alerts():
            result = await prometheus.query(signal(rule["expr"]))
            compared = [
                series
                for series in result
                if {"job", "instance"} <= series["metric"].keys()
                and math.isfinite(float(series["value"][1]))
            ]
            if not compared:
                alerting_empty.append(f"{rule['alert']}: {signal(rule['expr'])} -> {result}")
        assert alerting_empty == [], "alerts with nothing to compare:\n" + "\n".join(alerting_empty)
        unhealthy = [r for r in await prometheus.rules() if r.get("health") != "ok"]
        assert unhealthy == [], "rules Prometheus could not evaluate"
        # The load's failing GET /rooms/<id> (one room in five partial) wakes its alert, in
        # both processes; nothing says a healthy connection or Redis is down.
        raised = {
            (series["metric"]["alertname"], series["metric"]["instance"])
            for series in await prometheus.query("ALERTS")
        }
        instances = {f"127.0.0.1:{direct.admin_port}", f"127.0.0.1:{shared.admin_port}"}
        assert {i for name, i in raised if name == "EnricherPartialSnapshots"} == instances
        assert not {name for name, _ in raised} & DOWN_ALERTS, raised

        await picture(prometheus, dashboard, started, tmp_path / "dashboard.png")
    finally:
        prometheus.stop()


async def picture(prometheus: PrometheusServer, dashboard: Json, start: float, path: Path) -> None:
    """The dashboard drawn from the test's data, into ``path`` (and, when asked, into
    ``ENRICHER_DASHBOARD_PICTURE`` too)."""
    end = time.time()
    series = {
        (panel["id"], target["refId"]): await prometheus.query_range(
            concrete(target["expr"]).replace(WINDOW, "15s"), start, end, 1
        )
        for panel, target in targets(dashboard)
    }
    render(dashboard, series, start, path)
    assert (await asyncio.to_thread(path.stat)).st_size > 50_000  # drawn, not blank
    wanted = os.environ.get("ENRICHER_DASHBOARD_PICTURE")
    if wanted:
        render(dashboard, series, start, ROOT / wanted)
