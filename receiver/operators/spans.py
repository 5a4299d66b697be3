"""Spans of time as operators write them: 90m, 24h, 7d, 2w (the CLI and the admin API)."""

import re
from datetime import timedelta

_SPAN = re.compile(r"(\d{1,6})([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def is_span(text: str) -> bool:
    return _SPAN.fullmatch(text) is not None


def parse_span(text: str) -> timedelta | None:
    """The span `text` writes, or None if it is not one (or is zero)."""
    match = _SPAN.fullmatch(text)
    if match is None or int(match[1]) == 0:
        return None
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
