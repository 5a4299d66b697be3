"""Bar charts drawn on the server, as SVG geometry the templates place: no script, no
library, nothing the CSP has to allow."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

WIDTH, HEIGHT, GAP = 720, 160, 2


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: str  # the CSS class that colours it
    label: str  # what a hover says


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    bars: tuple[Bar, ...]
    peak: int
    first: datetime | None
    last: datetime | None


def stacked_bars(hours: Sequence[Mapping[str, Any]], series: Sequence[str]) -> Chart:
    """One bar per hour (`hour`: its start), each of `series` (the hour's counts by name)
    stacked in order."""
    peak = max((sum(hour[name] for name in series) for hour in hours), default=0)
    slot = WIDTH / max(len(hours), 1)
    bars: list[Bar] = []
    for index, hour in enumerate(hours):
        base = float(HEIGHT)
        for name in series:
            if not hour[name]:
                continue
            height = HEIGHT * hour[name] / peak
            base -= height
            label = f"{hour['hour']:%Y-%m-%d %H:00} UTC: {hour[name]} {name}"
            bars.append(Bar(index * slot, base, slot - GAP, height, name, label))
    first = hours[0]["hour"] if hours else None
    last = hours[-1]["hour"] if hours else None
    return Chart(WIDTH, HEIGHT, tuple(bars), peak, first, last)
