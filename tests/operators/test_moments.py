"""Times and spans operators give: the admin API's (a zone required), and the one reader the
CLI and the console share (`read_moment`: a zone optional, read in the caller's). What is not
one, or is outside what a datetime can hold, is a 400 naming the parameter, never a 500 and
never a guess. (Each admin case here was a 500, or a number read as 1970, before;
schemathesis found the span and the number.)"""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from receiver.app import create_app
from receiver.exceptions import InvalidRequestError
from receiver.operators.admin import ReplayRequest
from receiver.operators.moments import read_moment, utc_moment
from receiver.operators.spans import MAX_SPAN, parse_span
from receiver.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.helpers import new_secret


@pytest.fixture
async def admin() -> AsyncIterator[httpx.AsyncClient]:
    """The admin API in-process, without its lifespan: these queries never reach a database."""
    app = create_app(Settings(signing_secrets=new_secret(), admin_token=ADMIN_TOKEN))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://receiver",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as client:
        yield client


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/admin/events?since=0.5", "since"),
        ("/admin/events?until=1700000000", "until"),
        ("/admin/stats?since=9999-12-31T23:59:59-01:00", "since"),
        ("/admin/events?since=0001-01-01T00:00:00%2B00:01", "since"),
        ("/admin/events?until=2026-05-11T09:00:00", "until"),
        ("/admin/records?stale_after=999999w", "stale_after"),
        ("/admin/records?stale_after=%D9%A3m", "stale_after"),
    ],
)
async def test_a_query_time_or_span_that_is_not_one_is_400(
    admin: httpx.AsyncClient, path: str, field: str
) -> None:
    answer = await admin.get(path)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
    assert answer.json()["detail"].startswith(f"{field}: ")


@pytest.mark.parametrize(
    "body",
    [b'{"since": 0}', b'{"until": "9999-12-31T23:59:59-01:00"}', b'{"since": "2026-05-11"}'],
)
def test_a_replay_filter_time_that_is_not_one_is_refused(body: bytes) -> None:
    with pytest.raises(ValidationError):
        ReplayRequest.model_validate_json(body)


def test_a_time_with_a_zone_is_read_in_utc() -> None:
    assert utc_moment("2026-05-11T09:00:00+02:00") == datetime(2026, 5, 11, 7, tzinfo=UTC)
    assert utc_moment("9999-12-31T23:59:59Z") == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_spans_stop_at_a_century() -> None:
    assert parse_span("5217w") == timedelta(weeks=5217)
    assert parse_span("36525d") == MAX_SPAN
    assert parse_span("36526d") is None


NOW = datetime(2026, 12, 1, 17, 30, tzinfo=UTC)
# Zones with the widest offsets either way, summer time, and a half hour.
ZONES = [UTC, ZoneInfo("Pacific/Kiritimati"), ZoneInfo("Etc/GMT+12"), ZoneInfo("Europe/Paris")]
ZONES += [ZoneInfo("Asia/Kolkata")]


@given(text=st.text(), zone=st.sampled_from(ZONES))
def test_read_moment_is_total(text: str, zone: tzinfo) -> None:
    """Any text is an instant in UTC or the one refusal naming the field: never another
    exception (NUL, digits of other scripts, 99999999999d, years 0 and 10000 included)."""
    try:
        moment = read_moment(text, "since", zone, NOW)
    except InvalidRequestError as exc:
        refusal = str(exc)
    else:
        assert moment.tzinfo is UTC
        return
    assert refusal.startswith("since: give ")


@given(moment=st.datetimes(timezones=st.none() | st.timezones()), zone=st.sampled_from(ZONES))
def test_an_iso_time_is_read_as_its_instant_in_the_given_zone_when_it_has_none(
    moment: datetime, zone: tzinfo
) -> None:
    meant = moment if moment.tzinfo else moment.replace(tzinfo=zone, fold=0)
    try:
        expected = meant.astimezone(UTC)
    except OverflowError:
        with pytest.raises(InvalidRequestError, match=r"^until: give a time between years 1"):
            read_moment(moment.isoformat(), "until", zone, NOW)
    else:
        assert read_moment(moment.isoformat(), "until", zone, NOW) == expected


@given(count=st.integers(0, 999_999), unit=st.sampled_from(["s", "m", "h", "d", "w"]))
def test_a_span_counts_back_from_now_up_to_a_century(count: int, unit: str) -> None:
    span = timedelta(seconds=count * {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}[unit])
    if timedelta(0) < span <= MAX_SPAN:
        assert read_moment(f"{count}{unit}", "since", UTC, NOW) == NOW - span
    else:
        with pytest.raises(InvalidRequestError, match=r"^since: give a span from 1s to 36525d"):
            read_moment(f"{count}{unit}", "since", UTC, NOW)


def test_a_date_is_its_midnight_in_the_given_zone() -> None:
    paris = ZoneInfo("Europe/Paris")
    assert read_moment("2026-12-01", "since", paris, NOW) == datetime(2026, 11, 30, 23, tzinfo=UTC)
    assert read_moment("2026-12-01", "since", UTC, NOW) == datetime(2026, 12, 1, tzinfo=UTC)
    # Summer time: the zone's rules, not today's offset.
    assert read_moment("2026-07-01T09:00", "since", paris, NOW) == datetime(
        2026, 7, 1, 7, tzinfo=UTC
    )
