"""One way to write a time: the console's filters and the CLI accept the same strings and read
them as the same instant, against a real server and the real `receiver` command. Without a
zone, the console reads a time in the browser's zone (the `console_zone` cookie console.js
writes) and the CLI in UTC; a bad value is a 400 naming the field, or exit 1 with one line."""

import html
import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.console.conftest import Browser
from tests.helpers import Operator, ReceiverProcess

# Under each time filter, the instant it was read as (ISO 8601, UTC).
READ_AS = re.compile(r'id="(since|until)-read-as">read as <time datetime="([^"]+)"')
# Relative to a span's expected instant: the CLI and the console each take their own `now`.
SPAN_SLACK = timedelta(minutes=2)
PARIS_IN_WINTER = timedelta(hours=1)

# Each as an operator may type it, and the instant it names (UTC; no zone given = UTC).
ACCEPTED: list[tuple[str, datetime | timedelta]] = [
    ("2026-11-30", datetime(2026, 11, 30, tzinfo=UTC)),
    ("2026-11-30T09:00", datetime(2026, 11, 30, 9, tzinfo=UTC)),
    ("2026-11-30 09:00:30", datetime(2026, 11, 30, 9, 0, 30, tzinfo=UTC)),
    ("20261130T0900", datetime(2026, 11, 30, 9, tzinfo=UTC)),
    ("2026-11-30T09:00:00Z", datetime(2026, 11, 30, 9, tzinfo=UTC)),
    ("2026-11-30T09:00+02:00", datetime(2026, 11, 30, 7, tzinfo=UTC)),
    ("2026-11-30T09:00:00.5-05:30", datetime(2026, 11, 30, 14, 30, 0, 500_000, tzinfo=UTC)),
    (" 2026-11-30T09:00 ", datetime(2026, 11, 30, 9, tzinfo=UTC)),
    ("0001-01-01T00:00", datetime(1, 1, 1, tzinfo=UTC)),
    ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("90m", timedelta(minutes=90)),
    ("24h", timedelta(hours=24)),
    ("7d", timedelta(days=7)),
    ("2w", timedelta(weeks=2)),
    ("36525d", timedelta(days=36_525)),
]
# Each refused both ways, with the start of the sentence that says what is accepted.
GENERAL = "give a time such as 24h, 7d, 2026-12-01 or 2026-12-01T09:00"
REFUSED = [
    ("yesterday", GENERAL),
    ("1700000000", GENERAL),
    ("0.5", GENERAL),
    ("24 h", GENERAL),
    ("2026-13-01", GENERAL),
    ("2026-11-30T24:00", GENERAL),
    ("99999999999d", GENERAL),
    ("0d", "give a span from 1s to 36525d"),
    ("36526d", "give a span from 1s to 36525d"),
    ("9999-12-31T23:59:59-01:00", "give a time between years 1 and 9999"),
    ("0001-01-01T00:00+00:01", "give a time between years 1 and 9999"),
]


@pytest.fixture
def admin(server: ReceiverProcess, browsers: list[Browser]) -> Browser:
    browsers.append(Browser(server.url))
    browsers[-1].sign_in()
    return browsers[-1]


def console_reads(admin: Browser, text: str, field: str = "since") -> datetime:
    page = admin.get("/console/events", **{field: text})
    assert page.status_code == 200, page.text
    found = dict(READ_AS.findall(page.text))
    assert f'name="{field}" placeholder="e.g. ' in page.text
    assert f'value="{html.escape(text)}"' in page.text  # the filter shows back what was typed
    return datetime.fromisoformat(found[field])


def cli_reads(server: ReceiverProcess, text: str) -> datetime:
    since = Operator(server).json("stats", "--since", text)["since"]
    return datetime.fromisoformat(since)


def assert_names(instant: datetime, expected: datetime | timedelta) -> None:
    if isinstance(expected, timedelta):
        assert abs(datetime.now(UTC) - expected - instant) < SPAN_SLACK
    else:
        assert instant == expected


@pytest.mark.parametrize(("text", "expected"), ACCEPTED, ids=[text for text, _ in ACCEPTED])
def test_the_console_and_the_cli_read_a_time_as_the_same_instant(
    admin: Browser, server: ReceiverProcess, text: str, expected: datetime | timedelta
) -> None:
    cli = cli_reads(server, text)
    assert_names(cli, expected)
    for field in ("since", "until"):
        console = console_reads(admin, text, field)
        assert_names(console, expected)
        if isinstance(expected, datetime):
            assert console == cli


@pytest.mark.parametrize(("text", "reason"), REFUSED, ids=[text for text, _ in REFUSED])
def test_a_time_refused_by_one_is_refused_by_the_other_naming_the_field(
    admin: Browser, server: ReceiverProcess, text: str, reason: str
) -> None:
    for path in ("/console/events", "/console/failed", "/console/replay"):
        for field in ("since", "until"):
            page = admin.get(path, **{field: text})
            assert page.status_code == 400, (path, field)
            assert f"{field}: {reason}" in html.unescape(page.text)
    for command in (("events", "list"), ("stats",)):
        error = Operator(server).run(*command, "--since", text, code=1)
        assert error.strip().splitlines() == [error.strip()]
        assert f"--since: {reason}" in error


@pytest.mark.parametrize("text", ["\x00", "24h\x00", "2026-11-30\x00T09:00"])
def test_a_time_holding_nul_is_a_400_naming_the_field(admin: Browser, text: str) -> None:
    """A command line cannot carry a NUL, and a URL holding one is refused before any page
    reads it; a form can, and the confirmed replay reads its times."""
    assert admin.get("/console/events", since=text).status_code == 400
    page = admin.post("/console/replay", csrf=admin.csrf(), since=text)
    assert page.status_code == 400
    assert f"since: {GENERAL}" in html.unescape(page.text)


def test_a_blank_filter_is_no_filter_in_the_console_and_refused_by_the_cli(
    admin: Browser, server: ReceiverProcess
) -> None:
    assert admin.get("/console/events", since="", until="").status_code == 200
    assert "--since: give a time" in Operator(server).run("stats", "--since", "", code=1)


@pytest.mark.parametrize(
    ("text", "shift"),
    [
        ("2026-11-30T09:00", PARIS_IN_WINTER),
        ("2026-11-30", PARIS_IN_WINTER),
        ("2026-07-01T09:00", timedelta(hours=2)),  # summer time: the zone, not an offset
        ("2026-11-30T09:00Z", timedelta(0)),
        ("2026-11-30T09:00+02:00", timedelta(0)),
    ],
)
def test_a_time_without_a_zone_is_read_in_the_browsers_zone(
    admin: Browser, text: str, shift: timedelta
) -> None:
    in_utc = console_reads(admin, text)
    admin.client.cookies.set("console_zone", "Europe/Paris")
    assert console_reads(admin, text) == in_utc - shift


def test_a_span_is_the_same_in_every_zone(admin: Browser) -> None:
    admin.client.cookies.set("console_zone", "Pacific/Kiritimati")
    assert_names(console_reads(admin, "24h"), timedelta(hours=24))


@pytest.mark.parametrize(
    "cookie",
    [
        "Mars/Olympus_Mons",
        "../../../etc/passwd",
        "/usr/share/zoneinfo/Europe/Paris",
        "zone.tab",
        "Europe",
        "europe/paris",
        "x" * 2000,
        "Europe/Paris/..",
        "",
    ],
)
def test_a_zone_cookie_that_names_no_zone_reads_as_utc(admin: Browser, cookie: str) -> None:
    admin.client.cookies.set("console_zone", cookie)
    assert console_reads(admin, "2026-11-30T09:00") == datetime(2026, 11, 30, 9, tzinfo=UTC)


def test_the_year_one_read_in_a_zone_east_of_utc_is_a_400_not_a_500(admin: Browser) -> None:
    admin.client.cookies.set("console_zone", "Europe/Paris")
    page = admin.get("/console/events", since="0001-01-01")
    assert page.status_code == 400
    assert "since: give a time between years 1 and 9999" in html.unescape(page.text)


def test_placeholders_are_examples_not_values(admin: Browser) -> None:
    for path in ("/console/events", "/console/failed", "/console/replay"):
        placeholders = re.findall(r'placeholder="([^"]*)"', admin.get(path).text)
        assert placeholders, path
        assert all(p.startswith("e.g. ") for p in placeholders), placeholders
