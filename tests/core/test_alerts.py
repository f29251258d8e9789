"""The alert rules the chart ships (helm/enricher/files/prometheus-rules.yaml): valid, each
tested firing and quiet by promtool (tests/core/alerts_test.yaml), each explained in
docs/operations.md."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from .. import tools

ROOT = Path(__file__).parents[2]
RULES = ROOT / "helm" / "enricher" / "files" / "prometheus-rules.yaml"
UNIT_TESTS = Path(__file__).parent / "alerts_test.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"


def alerts() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tools.promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_every_alert_fires_when_it_should_and_only_then() -> None:
    result = promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert sorted(set(alerts()) - firing) == []
    assert sorted(set(alerts()) - quiet) == []


def test_every_alert_is_explained_for_whoever_it_wakes() -> None:
    text = OPERATIONS.read_text().split("### Alerts", 1)[1].split("\n## ", 1)[0]
    assert [name for name in alerts() if f"`{name}`" not in text] == []
