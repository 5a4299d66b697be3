"""Times as operators give them to the admin API: ISO 8601 text with a zone, read in UTC.

Read here rather than by pydantic's own datetime, which is lax twice over: it takes a
number (or the text of one) as Unix seconds, so `since=0.5` meant 1970 instead of a 400;
and it keeps the zone given, so a time UTC cannot hold (9999-12-31T23:59:59-01:00) failed
later, when the store converted it: a 500. (schemathesis found the first, against the
document; the second is the event parser's edge, issue 20's fifth finding, here too.)
"""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import PlainValidator


def utc_moment(value: object) -> datetime:
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError("give an ISO 8601 time with a zone, like 2026-05-11T09:00:00Z")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("give a time between years 1 and 9999 in UTC") from None


Moment = Annotated[datetime, PlainValidator(utc_moment)]
