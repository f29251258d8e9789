"""docs/operations.md lists every metric enricher exports."""

from pathlib import Path

from enricher.metrics import Metrics

OPERATIONS = Path(__file__).parents[2] / "docs" / "operations.md"


def test_every_metric_is_documented() -> None:
    metrics = Metrics()
    metrics.watch_sizes(dict)
    text = OPERATIONS.read_text()
    for family in metrics.registry.collect():
        if family.name.startswith("enricher_"):
            name = family.name + ("_total" if family.type == "counter" else "")
            assert f"`{name}`" in text, name
