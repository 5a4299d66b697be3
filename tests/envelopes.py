"""Hypothesis strategies for Rivya envelopes whose fields hold anything: any JSON, and the
values at the edges of each type that broke storage once (times at the ends of the range
with an offset, NUL and lone surrogates in text, integers past 64 bits, numbers past a
double), and bodies written by an encoder that lets through what orjson would refuse."""

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from tests.helpers import make_event

# Offsets of up to a day either way, as ISO 8601 allows and Python's datetime takes.
offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


def _west(offset: timezone) -> bool:
    return offset.utcoffset(None) <= -timedelta(hours=1)


def _east(offset: timezone) -> bool:
    return offset.utcoffset(None) >= timedelta(hours=1)


# Naive (the offset goes on after), within a day of each end of the range, or anywhere.
LAST_DAY = datetime(9999, 12, 31, tzinfo=UTC).replace(tzinfo=None)
FIRST_DAY = datetime(1, 1, 2, tzinfo=UTC).replace(tzinfo=None)
FIRST_HOUR = datetime(1, 1, 1, 0, 59, tzinfo=UTC).replace(tzinfo=None)
moments = st.one_of(
    st.datetimes(min_value=LAST_DAY), st.datetimes(max_value=FIRST_DAY), st.datetimes()
)


def _at(moment: datetime, offset: timezone) -> str:
    return moment.replace(tzinfo=offset).isoformat()


# Valid times that UTC cannot hold: in the last hour with an offset west of an hour or more,
# or in the first with one as far east.
beyond_the_range = st.one_of(
    st.builds(_at, st.datetimes(min_value=LAST_DAY.replace(hour=23)), offsets.filter(_west)),
    st.builds(_at, st.datetimes(max_value=FIRST_HOUR), offsets.filter(_east)),
)
timestamps = st.one_of(
    beyond_the_range,
    st.builds(_at, moments, offsets),
    moments.map(datetime.isoformat),  # no offset at all
    st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.isoformat()),
)
texts = st.one_of(
    st.text(max_size=20),
    st.text(max_size=10).map(lambda text: f"{text}\x00{text}"),
    st.sampled_from(["\ud800", "a\udfff", "\x00", "\x7f\x1b[31m", "..", "a/b", "%00", "\ufffd"]),
    st.text(min_size=250, max_size=300),
    # Past what PostgreSQL's btree takes in one index entry (about 2.7 kB), in 4-byte UTF-8.
    st.text(st.characters(min_codepoint=0x10000, max_codepoint=0x1FFFF), min_size=700),
)
numbers = st.one_of(
    st.integers(-(2**80), 2**80),
    st.sampled_from([2**53, 2**63, 2**64, -(2**63) - 1, 10**400]),
    st.floats(),  # with nan and the infinities, which a lenient encoder writes as such
)
scalars = st.none() | st.booleans() | numbers | texts | timestamps
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)

ENVELOPE_FIELDS = ("id", "type", "api_version", "created_at", "data")
GENERATION_FIELDS = (
    "id",
    "status",
    "model",
    "reserved_credits",
    "final_credits",
    "updated_at",
    "result",
    "error",
)


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"x": value}
    return value


# Deeply nested, within what Python's own encoder writes (its limit is the interpreter's
# recursion limit); past orjson's limit is a unit test of the parser.
deep = st.integers(100, 500).map(_nested)


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """A documented event (either applied type, or another), then some of its fields, the
    generation's, its result's and its error's swapped for any of the values above."""
    event_type = draw(st.sampled_from(["generation.succeeded", "generation.failed", "other"]))
    event = make_event("generation.failed" if event_type == "generation.failed" else event_type)
    generation = event["data"]
    generation["result"] = generation["result"] or {"urls": []}
    generation["error"] = generation["error"] or {"code": "e", "message": "m"}
    for field in draw(st.lists(st.sampled_from(["urls", "primary_url"]), max_size=1)):
        generation["result"][field] = draw(values | st.lists(texts, max_size=2))
    for field in draw(st.lists(st.sampled_from(["code", "message"]), max_size=1)):
        generation["error"][field] = draw(texts)
    # The times are drawn often, not left to chance: most draws of `values` are not times.
    if draw(st.booleans()):
        event["created_at"] = draw(timestamps)
    if draw(st.booleans()):
        generation["updated_at"] = draw(timestamps)
    for field in draw(st.lists(st.sampled_from(GENERATION_FIELDS), max_size=3)):
        generation[field] = draw(values)
    for field in draw(st.lists(st.sampled_from(ENVELOPE_FIELDS), max_size=2)):
        event[field] = draw(values | deep)
    return event


def body_of(event: Any) -> bytes:
    """As a lenient encoder writes it: integers of any size, NaN, and lone surrogates (as
    escapes) pass, where orjson would refuse to write them."""
    return json.dumps(event, ensure_ascii=True).encode()
