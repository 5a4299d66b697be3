"""Times as operators write them, read one way everywhere.

`read_moment` is the one reader of the CLI's `--since`/`--until` and the console's filters:
ISO 8601 with or without a zone, a date (2026-12-01 is its midnight), or a span back from
now (90m, 24h, 7d, 2w: `receiver.operators.spans`). A time without a zone is read in the
zone the caller names: the console's is the browser's (`receiver.console.zones`), the CLI's
is UTC, as it always was (a server's clock zone says nothing about its operator's).

The admin API is stricter (`Moment`): a script states its zone, so a time without one is a
400 there. Both are read here rather than by pydantic's own datetime, which is lax twice
over: it takes a number (or the text of one) as Unix seconds, so `since=0.5` meant 1970
instead of a 400; and it keeps the zone given, so a time UTC cannot hold
(9999-12-31T23:59:59-01:00) failed later, when the store converted it: a 500. (schemathesis
found the first, against the document; the second is the event parser's edge, issue 20's
fifth finding, here too.)
"""

from datetime import UTC, datetime, tzinfo
from typing import Annotated

from pydantic import PlainValidator

from receiver.exceptions import InvalidRequestError
from receiver.operators.spans import MAX_SPAN, is_span, parse_span

ACCEPTED = "give a time such as 24h, 7d, 2026-12-01 or 2026-12-01T09:00"


def read_moment(text: str, field: str, zone: tzinfo, now: datetime) -> datetime:
    """The instant `text` names, in UTC; `zone` reads a time given without one, `now` is
    what a span counts back from. Anything else is an InvalidRequestError naming `field`
    and what it accepts: the same sentence for every bad value, NUL and `99999999999d`
    included, and never the value itself (a page would show it back)."""
    refusal = f"{field}: {ACCEPTED} (read in {zone} when no zone is given)"
    written = text.strip()
    span = parse_span(written)
    if span is not None:
        return now.astimezone(UTC) - span
    if is_span(written):
        raise InvalidRequestError(f"{field}: give a span from 1s to {MAX_SPAN.days}d (a century)")
    try:
        moment = datetime.fromisoformat(written)
        return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).astimezone(UTC)
    except ValueError:
        raise InvalidRequestError(refusal) from None
    except OverflowError:
        raise InvalidRequestError(f"{field}: give a time between years 1 and 9999") from None


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
