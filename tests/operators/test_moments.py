"""Times and spans the admin API reads: what is not one, or is outside what a datetime can
hold, is a 400 naming the parameter, never a 500 and never a guess. (Each case here was a
500, or a number read as 1970, before; schemathesis found the span and the number.)"""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import ValidationError

from receiver.app import create_app
from receiver.operators.admin import ReplayRequest
from receiver.operators.moments import utc_moment
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
