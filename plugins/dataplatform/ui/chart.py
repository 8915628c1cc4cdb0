"""An inline SVG bar chart (no script, no CDN: the page must render on a machine without internet).

Labels and values come from data: the SVG is built by the page's Jinja template with autoescaping, this
module only computes the geometry."""

from __future__ import annotations

from dataclasses import dataclass

BAR_HEIGHT = 22
GAP = 8
LABEL_WIDTH = 220
PLOT_WIDTH = 420
VALUE_WIDTH = 110


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str  # the value as shown beside the bar
    y: int
    width: int  # pixels, proportional to value / the largest value


@dataclass(frozen=True)
class BarChart:
    title: str
    bars: list[Bar]
    width: int
    height: int
    label_width: int = LABEL_WIDTH


def bar_chart(title: str, series: list[tuple[str, float, str]]) -> BarChart:
    """Horizontal bars for ``(label, value, text shown beside the bar)``, in the order given; negative
    values draw no bar."""
    largest = max((value for _, value, _ in series), default=0) or 1
    bars = [
        Bar(
            label=label,
            value=value,
            text=text,
            y=GAP + i * (BAR_HEIGHT + GAP),
            width=max(0, round(PLOT_WIDTH * value / largest)),
        )
        for i, (label, value, text) in enumerate(series)
    ]
    height = GAP + len(bars) * (BAR_HEIGHT + GAP)
    return BarChart(title=title, bars=bars, width=LABEL_WIDTH + PLOT_WIDTH + VALUE_WIDTH, height=height)
