"""The overview's hourly charts, drawn on the server as SVG geometry the chart macro places:
no script, no library, nothing the CSP has to allow.

A chart is the whole window, every hour in its own slot with its own tick, so one busy hour
reads against the quiet ones around it rather than as a lone bar in an empty box. Hours are
labelled in the browser's zone (`receiver.console.zones`), as the pages' own times are; the
count scale has gridlines at round steps; each series is named in a legend, and the failed
one is hatched as well as coloured, so the two read apart in grey or to a colour-blind eye.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta, tzinfo
from typing import Any

# The SVG's own units; it scales to the page's width keeping this shape, text included.
WIDTH, HEIGHT = 960, 230
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 30, 44  # room for the scale, the legend and the hour axis
GAP = 2  # between two hours' bars
# Every LABEL_EVERY-th hour of the day is labelled: 24 labels of "14:00" do not fit 900 units.
LABEL_EVERY = 3
# Round steps for the count scale (times powers of ten), at most MAX_GRIDLINES lines above 0.
STEPS = (1, 2, 5)
MAX_GRIDLINES = 5
# Series drawn hatched as well as coloured (the macro defines one <pattern> for each).
HATCHED = frozenset({"failed"})
LEGEND_SPACING = 110
# The series named by a noun; the others are adjectives ("3 delivered", "1 failed").
SINGULAR = {"events": "event"}


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: str  # its CSS class, and its pattern's name when hatched
    hatched: bool


@dataclass(frozen=True, slots=True)
class Slot:
    """One hour: the column a hover reads, and its bars."""

    x: float
    width: float
    title: str  # "14:00-15:00: 12 delivered, 3 failed"
    bars: tuple[Bar, ...]


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    label: str | None  # "15:00", on the hours a multiple of LABEL_EVERY
    date: str | None  # "02 Dec", under the first label and each local midnight


@dataclass(frozen=True, slots=True)
class Gridline:
    y: float
    label: str


@dataclass(frozen=True, slots=True)
class Legend:
    x: float
    series: str
    hatched: bool


@dataclass(frozen=True, slots=True)
class Chart:
    name: str  # unique on the page: it prefixes the patterns' IDs
    width: int
    height: int
    left: int
    top: int
    right: float
    bottom: float
    slots: tuple[Slot, ...]
    ticks: tuple[Tick, ...]
    gridlines: tuple[Gridline, ...]
    legend: tuple[Legend, ...]
    hatched: tuple[str, ...]
    zone: str
    summary: str  # what a screen reader says instead of the picture
    start: str | None  # the window, ISO 8601 in UTC (the page shows it in the browser's zone)
    end: str | None


def scale_top(peak: int) -> tuple[int, int]:
    """The scale's top and step: the smallest round step giving at most MAX_GRIDLINES
    lines above zero that reach `peak` (at least 1, so an empty chart still has a scale)."""
    magnitude = 1
    while True:
        for step in STEPS:
            size = step * magnitude
            lines = -(-max(peak, 1) // size)
            if lines <= MAX_GRIDLINES:
                return lines * size, size
        magnitude *= 10


def _counts(counts: Mapping[str, int], series: Sequence[str]) -> str:
    """ "1 event, 3 delivered": a noun agrees with its number."""
    return ", ".join(
        f"{counts[name]} {SINGULAR.get(name, name) if counts[name] == 1 else name}"
        for name in series
    )


def hourly_chart(
    name: str, hours: Sequence[Mapping[str, Any]], series: Sequence[str], zone: tzinfo
) -> Chart:
    """Stacked bars, one slot per entry of `hours` (`hour`: its start, aware; each of
    `series`: its count), oldest first, labelled in `zone`."""
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM
    ceiling, step = scale_top(max((sum(h[s] for s in series) for h in hours), default=0))
    slot_width = (right - LEFT) / max(len(hours), 1)
    per_count = (bottom - TOP) / ceiling
    slots: list[Slot] = []
    ticks: list[Tick] = []
    dated = False
    for index, hour in enumerate(hours):
        x = LEFT + index * slot_width
        local = hour["hour"].astimezone(zone)
        until = (hour["hour"] + timedelta(hours=1)).astimezone(zone)
        base, bars = float(bottom), list[Bar]()
        for label in series:
            height = hour[label] * per_count
            if height:
                base -= height
                bars.append(
                    Bar(x + GAP / 2, base, slot_width - GAP, height, label, label in HATCHED)
                )
        # The hour a clock goes back or forward names both offsets: 02:00 CEST-02:00 CET.
        wall = "%H:%M %Z" if until.utcoffset() != local.utcoffset() else "%H:%M"
        title = f"{local:{wall}}-{until:{wall}}: {_counts(hour, series)}"
        slots.append(Slot(x, slot_width, title, tuple(bars)))
        # Labels fall on the zone's round hours, midnight among them; the first label and
        # each midnight's carry the date.
        labelled = local.hour % LABEL_EVERY == 0
        date = f"{local:%d %b}" if labelled and (local.hour == 0 or not dated) else None
        dated = dated or date is not None
        ticks.append(Tick(x, f"{local:%H:%M}" if labelled else None, date))
    gridlines = tuple(
        Gridline(bottom - count * per_count, str(count)) for count in range(0, ceiling + 1, step)
    )
    legend = tuple(
        Legend(right - LEGEND_SPACING * (len(series) - i), label, label in HATCHED)
        for i, label in enumerate(series)
    )
    return Chart(
        name=name,
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        top=TOP,
        right=right,
        bottom=bottom,
        slots=tuple(slots),
        ticks=tuple(ticks),
        gridlines=gridlines,
        legend=legend,
        hatched=tuple(label for label in series if label in HATCHED),
        zone=str(zone),
        summary=_summary(hours, series, zone),
        start=hours[0]["hour"].isoformat() if hours else None,
        end=(hours[-1]["hour"] + timedelta(hours=1)).isoformat() if hours else None,
    )


def _summary(hours: Sequence[Mapping[str, Any]], series: Sequence[str], zone: tzinfo) -> str:
    if not hours:
        return "no hours to show"
    totals = {label: sum(h[label] for h in hours) for label in series}
    busiest = max(hours, key=lambda h: sum(h[s] for s in series))
    first = hours[0]["hour"].astimezone(zone)
    last = (hours[-1]["hour"] + timedelta(hours=1)).astimezone(zone)
    text = (
        f"{len(hours)} hours from {first:%d %b %H:%M} to {last:%d %b %H:%M} ({zone}): "
        + _counts(totals, series)
    )
    if any(totals.values()):
        start = busiest["hour"].astimezone(zone)
        text += f"; busiest hour from {start:%H:%M}, {_counts(busiest, series)}"
    return text
