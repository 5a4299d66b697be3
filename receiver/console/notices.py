"""The line an action's answer shows (base.html), and how an action carries its numbers there.

An action answers with a redirect, so that reloading the page it lands on does not act
again: the notice's word in `done`, its counts in the query, and `signed`, an HMAC-SHA256
of those parameters keyed by the session's own CSRF token (a secret the server holds, one
per session). A page shows the notice only to a signed-in session, and only when the
signature is that session's, compared in constant time: a link anyone else made (to a
signed-out browser, to another session, or with a count changed) shows nothing. So a link
cannot make the console say what it likes, and the sign-in page cannot be asked which
destination names exist (it answered "Replayed ..." for one and "Done." for any other).
Error pages and the sign-in page show none at all (their templates leave the block empty).
"""

import hashlib
import hmac
import re
from collections.abc import Sequence
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request

from receiver.console.access import Session, same_value
from receiver.console.guard import session_of
from receiver.operators.actions import ReprocessCounts
from receiver.operators.replays import Replayed

# A count carried back. A replay queues at most one delivery per stored event and
# destination; twelve digits (under a trillion) is more than any store here holds.
COUNT = re.compile(r"[0-9]{1,12}")
# The parameters a notice is made of, and the one that signs them.
SAID = frozenset({"done", "replayed", "became", "changed", "gone"})
SIGNED = "signed"
# What the actions with no count to report say.
FIXED = {
    "reconciled": "Rivya was asked about this task.",
    "auth_failed": "Rivya refused the API key: nothing was asked.",
    "unavailable": "Rivya's API was unavailable: try again later.",
    "disabled": "Disabled: nothing is sent to it until it is enabled.",
    "enabled": "Enabled: its pending deliveries are sent again.",
    "unchanged": "Nothing changed: it already was.",
}
UNREADABLE = "Done."

Counts = Sequence[tuple[str, str]]


def answer_to(session: Session, path: str, done: str, counts: Counts = ()) -> str:
    """Where an action's redirect lands: `path` (an ID in it already encoded) with the
    notice's word and counts, signed for `session` alone."""
    said = [("done", done), *counts]
    separator = "&" if "?" in path else "?"
    return f"{path}{separator}{urlencode([*said, (SIGNED, _signature(session, said))])}"


def replayed_counts(replayed: Replayed) -> Counts:
    return [("replayed", f"{name}:{n}") for name, n in replayed.by_destination.items()]


def reprocessed_counts(counts: ReprocessCounts) -> Counts:
    became = [("became", f"{outcome}:{n}") for outcome, n in counts.outcomes.items()]
    # Only when retention removed some: the notice says it then, and nothing otherwise.
    gone = [("gone", str(counts.gone))] if counts.gone else []
    return [("changed", str(counts.changed)), *became, *gone]


def notice_of(request: Request) -> str | None:
    """The notice for the page `request` asks for, if its own session's action led there."""
    session = session_of(request)
    params = request.query_params
    given = params.get(SIGNED)
    if session is None or given is None:
        return None
    # In the order they came: the order signed, and the order the counts are told.
    said = [(name, value) for name, value in params.multi_items() if name in SAID]
    if not same_value(given, _signature(session, said)):
        return None
    done = params.get("done")
    if done == "replayed":
        return _replayed(params)
    if done == "reprocessed":
        return _reprocessed(params)
    return FIXED.get(done or "", UNREADABLE)


def _signature(session: Session, said: Counts) -> str:
    message = urlencode(said).encode()
    return hmac.new(session.csrf_token.encode(), message, hashlib.sha256).hexdigest()


def _replayed(params: QueryParams) -> str:
    by_destination = _named_counts(params.getlist("replayed"))
    if by_destination is None:
        return UNREADABLE
    if not by_destination:
        return "Nothing was replayed: no delivery matched."
    return f"Replayed {Replayed(by_destination)}."


def _reprocessed(params: QueryParams) -> str:
    outcomes = _named_counts(params.getlist("became"))
    changed, gone = params.get("changed", ""), params.get("gone", "0")
    if outcomes is None or not (COUNT.fullmatch(changed) and COUNT.fullmatch(gone)):
        return UNREADABLE
    counts = ReprocessCounts(outcomes, int(changed), int(gone))
    if counts.unchanged < 0:
        return UNREADABLE
    said = str(counts)
    return f"{said[:1].upper()}{said[1:]}."


def _named_counts(values: list[str]) -> dict[str, int] | None:
    """`name:count` pairs, each name given once; None if any is not."""
    found: dict[str, int] = {}
    for value in values:
        name, _, count = value.partition(":")
        if name in found or not COUNT.fullmatch(count):
            return None
        found[name] = int(count)
    return found
