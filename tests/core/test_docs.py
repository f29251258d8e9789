"""docs/operations.md lists every metric enricher exports."""

import subprocess
from pathlib import Path

from enricher.metrics import Metrics

from .. import tools

OPERATIONS = Path(__file__).parents[2] / "docs" / "operations.md"


def test_every_metric_is_documented() -> None:
    metrics = Metrics()
    metrics.watch_sizes(dict)
    text = OPERATIONS.read_text()
    for family in metrics.registry.collect():
        if family.name.startswith("enricher_"):
            name = family.name + ("_total" if family.type == "counter" else "")
            assert f"`{name}`" in text, name


def test_the_example_alerts_are_valid_prometheus_rules(tmp_path: Path) -> None:
    promtool = tools.promtool()
    text = OPERATIONS.read_text()
    rules = text.split("### Alerts", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "rules.yaml").write_text(rules)
    result = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "rules.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {rules.count('- alert:')} rules found" in result.stdout  # each one read
