"""The generation parser, as reconciliation uses it (Rivya's API answer, any status) and its
time reader over the whole range of datetimes and offsets."""

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.generations import Unparseable, parse_generation, read_timestamp
from tests.envelopes import timestamps
from tests.helpers import make_event


def test_an_api_answer_of_any_status_parses() -> None:
    answer = make_event()["data"] | {"status": "processing", "result": None}
    generation = parse_generation(answer)
    assert (generation.task_id, generation.status) == (answer["id"], "processing")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"updated_at": "9999-12-31T23:59:59-01:00"}, "invalid_updated_at"),
        ({"updated_at": "0001-01-01T00:00:00+00:01"}, "invalid_updated_at"),
        ({"model": "z-\x00image"}, "invalid_characters"),
        ({"id": "task\x00"}, "invalid_characters"),
        ({"status": "succeeded\x00"}, "invalid_status"),
    ],
)
def test_an_answer_no_backend_can_store_is_unparseable(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(Unparseable) as raised:
        parse_generation(make_event()["data"] | change)
    assert raised.value.reason == reason


@given(text=timestamps | st.text(max_size=40))
def test_any_time_text_is_utc_or_unparseable(text: str) -> None:
    """Never an OverflowError: a time is the same instant in UTC, or it is refused."""
    moment, reason = None, None
    try:
        moment = read_timestamp({"at": text}, "at")
    except Unparseable as exc:
        reason = exc.reason
    if moment is None:
        assert reason == "invalid_at"
    else:
        assert moment.tzinfo is UTC
        assert moment == datetime.fromisoformat(text)
