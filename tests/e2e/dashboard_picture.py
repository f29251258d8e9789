"""A picture of enricher's Grafana dashboard drawn with matplotlib, from what a real
Prometheus answered to the dashboard's own queries (Grafana does not install here). Rows and
panels in the dashboard's order and titles, one line per series, named by its legend."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

Json = dict[str, Any]
COLUMNS = 3
UNITS = {"bytes": "B", "s": "s", "reqps": "req/s", "ops": "/s", "percentunit": "", "short": ""}


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: ``{{name}}`` replaced by the series' label."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


def _scaled(unit: str) -> FuncFormatter:
    def format(value: float, _: Any) -> str:
        if unit == "percentunit":
            return f"{value * 100:.0f}%"
        if unit in ("bytes", "Bps"):
            per = "/s" if unit == "Bps" else ""
            for suffix in ("B", "KiB", "MiB", "GiB"):
                if abs(value) < 1024:
                    return f"{value:.0f} {suffix}{per}"
                value /= 1024
            return f"{value:.0f} TiB{per}"
        if unit == "s" and 0 < abs(value) < 1:
            return f"{value * 1000:.0f} ms"
        return f"{value:.3g} {UNITS.get(unit, '')}".strip()

    return FuncFormatter(format)


def render(
    dashboard: Json, series: dict[tuple[int, str], list[Any]], start: float, path: Path
) -> None:
    """Draw ``dashboard``'s panels: ``series[(panel id, refId)]`` is Prometheus's
    ``query_range`` result of that target; times in seconds since ``start``."""
    rows: list[tuple[str, list[Json]]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            rows.append((panel["title"], []))
        else:
            rows[-1][1].append(panel)
    lines = sum(math.ceil(len(panels) / COLUMNS) for _, panels in rows)
    figure = plt.figure(figsize=(18, 3.1 * lines + 0.5 * len(rows) + 1), dpi=80)
    figure.suptitle(dashboard["title"], x=0.01, ha="left", fontsize=16, fontweight="bold")
    grid = figure.add_gridspec(lines, COLUMNS, hspace=0.75, wspace=0.18, top=0.97, bottom=0.02)
    line = 0
    for title, panels in rows:
        for index, panel in enumerate(panels):
            axes = figure.add_subplot(grid[line + index // COLUMNS, index % COLUMNS])
            if index == 0:
                axes.annotate(title, (0, 1.32), xycoords="axes fraction", fontsize=12,
                              fontweight="bold", color="#444")  # fmt: skip
            _panel(axes, panel, series, start)
        line += math.ceil(len(panels) / COLUMNS)
    figure.savefig(path)
    plt.close(figure)


def _panel(axes: Any, panel: Json, series: dict[tuple[int, str], list[Any]], start: float) -> None:
    axes.set_title(panel["title"], loc="left", fontsize=10)
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    drawn = [
        (target, result)
        for target in panel["targets"]
        for result in series.get((panel["id"], target["refId"]), [])
    ]
    # Series that stayed 0 (outcomes that never happened) are left out, as a reader would
    # hide them; a panel of zeros only keeps them, to show it has data.
    nonzero = [(t, r) for t, r in drawn if any(float(v) != 0 for _, v in r["values"])]
    for target, result in nonzero or drawn:
        points = [(float(t) - start, float(v)) for t, v in result["values"]]
        points = [(t, v) for t, v in points if math.isfinite(v)]
        if points:
            times, values = zip(*points, strict=True)
            axes.plot(times, values, linewidth=1.2,
                      label=legend(target["legendFormat"], result["metric"]))  # fmt: skip
    axes.yaxis.set_major_formatter(_scaled(unit))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda t, _: f"{t:.0f}s"))
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    axes.set_ylim(bottom=0)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=6, loc="upper left", ncols=2, frameon=False)
