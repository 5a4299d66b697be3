"""Spans of time as operators write them: 90m, 24h, 7d, 2w (the CLI and the admin API)."""

import re
from datetime import timedelta

_SPAN = re.compile(r"([0-9]{1,6})([smhdw])")
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
