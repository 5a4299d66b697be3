"""Spans of time as operators write them: 90m, 24h, 7d, 2w (the CLI and the admin API)."""

import re
from datetime import timedelta

# Digits a span's number takes: 999999 is the most.
MOST_DIGITS = 6
_SPAN = re.compile(rf"([0-9]{{1,{MOST_DIGITS}}})([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
# Nothing stored is older than a century, and a span is taken back from now: 999999w (19,000
# years) left a datetime's range, a 500 on /admin/records?stale_after= (found by schemathesis).
MAX_SPAN = timedelta(days=36_525)


def is_span(text: str) -> bool:
    return _SPAN.fullmatch(text) is not None


def parse_span(text: str) -> timedelta | None:
    """The span `text` writes, or None if it is not one (or is zero, or over MAX_SPAN)."""
    match = _SPAN.fullmatch(text)
    if match is None or int(match[1]) == 0:
        return None
    span = timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
    return span if span <= MAX_SPAN else None


def span_text(seconds: float) -> str:
    """`seconds` as `parse_span` reads it back: in the largest unit that divides it, or
    (past the digits a span takes) in the smallest that fits them, rounded down: never
    longer than `seconds`, at least 1 s, at most MAX_SPAN."""
    whole = min(max(1, int(seconds)), int(MAX_SPAN.total_seconds()))
    fitting = [
        (unit, size) for unit, size in _UNIT_SECONDS.items() if whole // size < 10**MOST_DIGITS
    ]
    exact = [(unit, size) for unit, size in fitting if whole % size == 0]
    unit, size = exact[-1] if exact else fitting[0]
    return f"{whole // size}{unit}"
