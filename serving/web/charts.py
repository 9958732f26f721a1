"""Horizontal bar charts as inline SVG: the geometry here, the markup in
templates/_charts.html (autoescaped text, classes styled by static/style.css)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

WIDTH, LABEL_WIDTH, VALUE_ROOM = 640, 190, 70
BAR_HEIGHT, ROW_GAP, LEGEND_HEIGHT = 14, 10, 24
MAX_LABEL_CHARS = 28


@dataclass(frozen=True)
class Bar:
    series: int
    y: float
    width: float
    text: str


@dataclass(frozen=True)
class Row:
    label: str              # the full label (the row's tooltip)
    short: str              # what fits beside the bars
    y: float                # baseline of the label
    bars: list


@dataclass(frozen=True)
class BarChart:
    id: str
    title: str
    series: list            # legend names (no legend for one series)
    rows: list
    width: int
    height: int
    bar_x: int = LABEL_WIDTH
    bar_height: int = BAR_HEIGHT


def bar_chart(chart_id: str, title: str, labels: list[str], series: dict[str, list],
              fmt: Callable[[float], str] = "{:.3f}".format) -> BarChart:
    """One row per label, one bar per series (values None or not finite: no bar), all on one
    scale from 0 to the largest value."""
    names = list(series)
    series = {name: [v if v is not None and math.isfinite(v) else None for v in column]
              for name, column in series.items()}
    values = [v for column in series.values() for v in column if v is not None]
    top = max([v for v in values if v > 0], default=1.0)
    length = WIDTH - LABEL_WIDTH - VALUE_ROOM
    y = LEGEND_HEIGHT if len(names) > 1 else 4
    rows = []
    for i, label in enumerate(labels):
        bars = []
        for s, name in enumerate(names):
            value = series[name][i]
            if value is not None:
                bars.append(Bar(s, y + s * BAR_HEIGHT, max(value, 0.0) / top * length,
                                fmt(value)))
        short = label if len(label) <= MAX_LABEL_CHARS else label[:MAX_LABEL_CHARS - 1] + "…"
        rows.append(Row(label, short, y + len(names) * BAR_HEIGHT / 2 + 4, bars))
        y += len(names) * BAR_HEIGHT + ROW_GAP
    return BarChart(chart_id, title, names if len(names) > 1 else [], rows, WIDTH, int(y) + 4)
