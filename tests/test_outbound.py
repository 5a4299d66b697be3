"""Outbound HTTP's shared pieces: reading a server's Retry-After."""

from datetime import UTC, datetime

import pytest

from receiver.outbound import MAX_RETRY_AFTER_SECONDS, parse_retry_after

NOW = datetime(2026, 5, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        (" 30 ", 30.0),
        ("Sun, 10 May 2026 12:01:00 GMT", 60.0),
        ("Sun, 10 May 2026 11:00:00 GMT", 0.0),
        ("99999999999", MAX_RETRY_AFTER_SECONDS),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_in_both_forms(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds
