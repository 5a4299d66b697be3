"""The zone an operator's browser is in, for the filters it sends and the charts it gets.

console.js (a static file: the CSP allows no inline script) writes the browser's IANA zone
(`Intl.DateTimeFormat().resolvedOptions().timeZone`) to the `console_zone` cookie. The
value is the browser's to send, so it is only looked up, never opened: a name outside the
zone database's own list (garbage, a path, an oversized text, or no database at all) reads
as UTC, never as an error.
"""

from datetime import UTC, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from starlette.requests import Request

ZONE_COOKIE = "console_zone"
# The longest IANA name is 32 characters (America/Argentina/ComodRivadavia): anything over
# twice that is not one, and is refused before the set is even asked.
MAX_ZONE_CHARS = 64


@cache
def _known_zones() -> frozenset[str]:
    # Listed once per process (600 names, a twentieth of a second): a closed set, so the
    # cookie never names a file zoneinfo would open.
    return frozenset(available_timezones())


def zone_of(request: Request) -> tzinfo:
    name = request.cookies.get(ZONE_COOKIE, "")
    if len(name) <= MAX_ZONE_CHARS and name in _known_zones():
        return ZoneInfo(name)
    return UTC
