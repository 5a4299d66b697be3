"""The overview's hourly charts inform: every hour of the window a slot with its tick and its
hover title, hours in the browser's zone (the `console_zone` cookie), a count scale with
gridlines and labels, a legend, and failed hatched as well as red. Drawn on the server, as
SVG, for a real server's overview and for the geometry itself."""

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from markupsafe import Markup

from receiver.console.charts import HEIGHT, LEFT, RIGHT, WIDTH, hourly_chart, scale_top
from receiver.console.rendering import templates
from tests.conftest import Rivya, Sensitive
from tests.console.conftest import Browser
from tests.helpers import ReceiverProcess, make_event

# An hour in the last day, with no minutes: the window's 24 starts as the store gives them.
END = datetime(2026, 12, 1, 15, tzinfo=UTC)
TITLE = re.compile(r"<title>([^<]*)</title>")
HOUR_LABEL = re.compile(r'<text class="hour"[^>]*>([^<]*)</text>')
LEVEL = re.compile(r'<text class="level"[^>]*>([^<]*)</text>')


def day(busy: dict[int, dict[str, int]] | None = None, end: datetime = END) -> list[dict[str, Any]]:
    """24 hours as `hourly_activity` gives them, oldest first; `busy` by index."""
    hours = [
        {"hour": end - timedelta(hours=23 - n), "events": 0, "delivered": 0, "failed": 0}
        for n in range(24)
    ]
    for index, counts in (busy or {}).items():
        hours[index] |= counts
    return hours


def drawn(chart_name: str, hours: list[dict[str, Any]], series: tuple[str, ...], zone: Any) -> str:
    macros: Any = templates.env.get_template("macros.html").module
    rendered: Markup = macros.chart(hourly_chart(chart_name, hours, series, zone), "Per hour")
    return str(rendered)


def test_one_busy_hour_sits_among_all_twenty_four_each_with_its_slot_and_tick() -> None:
    chart = hourly_chart(
        "deliveries", day({23: {"delivered": 12, "failed": 3}}), ("delivered", "failed"), UTC
    )
    assert len(chart.slots) == len(chart.ticks) == 24
    widths = {round(slot.width, 6) for slot in chart.slots}
    assert widths == {round((WIDTH - RIGHT - LEFT) / 24, 6)}
    assert chart.slots[0].x == LEFT
    assert chart.slots[-1].x + chart.slots[-1].width == pytest.approx(WIDTH - RIGHT)
    assert [len(slot.bars) for slot in chart.slots] == [0] * 23 + [2]
    assert chart.slots[-1].title == "15:00-16:00: 12 delivered, 3 failed"
    assert chart.slots[0].title == "16:00-17:00: 0 delivered, 0 failed"


def test_hours_are_labelled_and_titled_in_the_given_zone() -> None:
    in_utc = hourly_chart("events", day(), ("events",), UTC)
    in_paris = hourly_chart("events", day(), ("events",), ZoneInfo("Europe/Paris"))
    in_kolkata = hourly_chart("events", day(), ("events",), ZoneInfo("Asia/Kolkata"))
    assert in_utc.slots[-1].title == "15:00-16:00: 0 events"
    assert in_paris.slots[-1].title == "16:00-17:00: 0 events"
    assert in_kolkata.slots[-1].title == "20:30-21:30: 0 events"
    # Labels fall on the zone's own round hours; the first and each midnight carry the date.
    assert [t.label for t in in_utc.ticks if t.label] == [
        "18:00",
        "21:00",
        "00:00",
        "03:00",
        "06:00",
        "09:00",
        "12:00",
        "15:00",
    ]
    assert [t.date for t in in_utc.ticks if t.date] == ["30 Nov", "01 Dec"]
    assert [t.label for t in in_paris.ticks if t.label][:2] == ["18:00", "21:00"]
    assert all(t.label.endswith(":30") for t in in_kolkata.ticks if t.label)
    assert (in_utc.zone, in_paris.zone, in_kolkata.zone) == ("UTC", "Europe/Paris", "Asia/Kolkata")


def test_the_hour_a_clock_goes_back_names_both_offsets() -> None:
    """Paris left summer time at 01:00 UTC on 25 October 2026: 02:00 twice."""
    chart = hourly_chart(
        "events",
        day(end=datetime(2026, 10, 25, 12, tzinfo=UTC)),
        ("events",),
        ZoneInfo("Europe/Paris"),
    )
    titles = [slot.title for slot in chart.slots]
    assert "02:00 CEST-02:00 CET: 0 events" in titles
    assert "02:00-03:00: 0 events" in titles


@pytest.mark.parametrize(
    ("peak", "top", "step"),
    [
        (0, 1, 1),
        (1, 1, 1),
        (3, 3, 1),
        (5, 5, 1),
        (6, 6, 2),
        (7, 8, 2),
        (13, 15, 5),
        (101, 150, 50),
        (10**9, 10**9, 2 * 10**8),
    ],
)
def test_the_count_scale_has_round_steps_reaching_the_peak(peak: int, top: int, step: int) -> None:
    assert scale_top(peak) == (top, step)


def test_the_scale_the_legend_the_hatching_and_a_summary_are_drawn() -> None:
    svg = drawn(
        "deliveries",
        day({20: {"delivered": 10, "failed": 3}, 22: {"delivered": 1, "failed": 1}}),
        ("delivered", "failed"),
        UTC,
    )
    assert LEVEL.findall(svg) == ["0", "5", "10", "15"]
    assert svg.count('<line class="grid"') == 4
    assert len(HOUR_LABEL.findall(svg)) == 8
    assert svg.count('<line class="tick"') == 24
    # The legend names both series, the failed swatch hatched like its bars.
    assert re.findall(r'<text class="key"[^>]*>([^<]*)</text>', svg) == ["delivered", "failed"]
    assert '<pattern id="deliveries-failed" class="hatch failed"' in svg
    assert svg.count('fill="url(#deliveries-failed)"') == 1 + 2  # the swatch and two bars
    assert 'class="bar delivered" fill=' not in svg
    assert "12:00-13:00: 10 delivered, 3 failed" in TITLE.findall(svg)
    assert len(TITLE.findall(svg)) == 24
    assert 'role="img"' in svg
    label = re.search(r'aria-label="([^"]*)"', svg)
    assert label is not None
    assert label[1] == (
        "Per hour: 24 hours from 30 Nov 16:00 to 01 Dec 16:00 (UTC): 11 delivered, 4 failed;"
        " busiest hour from 12:00, 10 delivered, 3 failed"
    )
    assert f'viewBox="0 0 {WIDTH} {HEIGHT}"' in svg
    assert "preserveAspectRatio" not in svg  # text keeps its shape


def test_a_count_of_one_agrees_with_its_noun() -> None:
    chart = hourly_chart("events", day({23: {"events": 1}}), ("events",), UTC)
    assert chart.slots[-1].title == "15:00-16:00: 1 event"
    assert chart.summary.endswith("busiest hour from 15:00, 1 event")


@pytest.fixture
def overview(
    start_server: Callable[..., ReceiverProcess],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    browsers: list[Browser],
) -> tuple[Rivya, Browser]:
    server = start_server()
    browsers.append(Browser(server.url))
    browsers[-1].sign_in()
    return Rivya(server, secrets_in_use[0], sensitive), browsers[-1]


def test_the_overview_draws_hours_in_the_browsers_zone_and_a_garbage_zone_as_utc(
    overview: tuple[Rivya, Browser],
) -> None:
    rivya, browser = overview
    assert rivya.send(make_event()).status_code == 200
    received = datetime.fromisoformat(rivya.admin("/events").json()["events"][0]["received_at"])
    hour = received.replace(minute=0, second=0, microsecond=0)

    def events_chart(zone: str | None) -> str:
        if zone is not None:
            browser.client.cookies.set("console_zone", zone)
        page = browser.get("/console/")
        assert page.status_code == 200
        found = re.search(
            r'<figure class="chart" id="events-chart" data-zone="([^"]*)">.*?</figure>',
            page.text,
            re.S,
        )
        assert found is not None
        return found[0]

    def titled(zone: Any) -> str:
        start, end = hour.astimezone(zone), (hour + timedelta(hours=1)).astimezone(zone)
        return f"{start:%H:%M}-{end:%H:%M}: 1 event"

    in_utc = events_chart(None)
    assert 'data-zone="UTC"' in in_utc
    assert "hours in UTC" in in_utc
    assert titled(UTC) in TITLE.findall(in_utc)
    assert all(label.endswith(":00") for label in HOUR_LABEL.findall(in_utc))

    kolkata = ZoneInfo("Asia/Kolkata")
    in_kolkata = events_chart("Asia/Kolkata")
    assert "hours in Asia/Kolkata" in in_kolkata
    assert titled(kolkata) in TITLE.findall(in_kolkata)
    assert all(label.endswith(":30") for label in HOUR_LABEL.findall(in_kolkata))
    assert len(TITLE.findall(in_kolkata)) == 24

    for garbage in ("Mars/Olympus_Mons", "../../etc/localtime", "zone.tab", "x" * 2000):
        fallen_back = events_chart(garbage)
        assert 'data-zone="UTC"' in fallen_back
        assert "hours in UTC" in fallen_back
        assert titled(UTC) in TITLE.findall(fallen_back)
