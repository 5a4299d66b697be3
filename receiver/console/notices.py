"""The line an action's answer shows (base.html), and how an action carries its numbers there.

An action answers with a redirect, so that reloading the page it lands on does not act
again: the notice's word in `done`, its counts in the query. The notice is built here from
this module's own words and those counts, each read back as an integer beside a name this
service gave it (a configured destination, an outcome), never from other text of the
request: a link cannot make the console say what it likes. A count that cannot be read
leaves the general "Done." rather than a notice with part of its numbers.
"""

import re
from collections.abc import Collection, Sequence
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request

from receiver.model import Outcome
from receiver.operators.actions import ReprocessCounts
from receiver.operators.replays import Replayed
from receiver.services import services_of

# A count carried back. A replay queues at most one delivery per stored event and
# destination; twelve digits (under a trillion) is more than any store here holds, and
# keeps a forged one short.
COUNT = re.compile(r"[0-9]{1,12}")
OUTCOMES = frozenset(outcome.value for outcome in Outcome)
# What the actions with no count to report say.
FIXED = {
    "reconciled": "Rivya was asked about this task.",
    "auth_failed": "Rivya refused the API key: nothing was asked.",
    "unavailable": "Rivya's API was unavailable: try again later.",
}
UNREADABLE = "Done."

Counts = Sequence[tuple[str, str]]


def answer_to(path: str, done: str, counts: Counts = ()) -> str:
    """Where an action's redirect lands: `path` (an ID in it already encoded) with the
    notice's word and counts."""
    separator = "&" if "?" in path else "?"
    return f"{path}{separator}{urlencode([('done', done), *counts])}"


def replayed_counts(replayed: Replayed) -> Counts:
    return [("replayed", f"{name}:{n}") for name, n in replayed.by_destination.items()]


def reprocessed_counts(counts: ReprocessCounts) -> Counts:
    became = [("became", f"{outcome}:{n}") for outcome, n in counts.outcomes.items()]
    return [("changed", str(counts.changed)), *became]


def notice_of(request: Request) -> str | None:
    """The notice for the page `request` asks for, if an action led there."""
    params = request.query_params
    done = params.get("done")
    if done is None:
        return None
    if done == "replayed":
        destinations = {d.name for d in services_of(request).settings.forwarding}
        return _replayed(params, destinations)
    if done == "reprocessed":
        return _reprocessed(params)
    return FIXED.get(done, UNREADABLE)


def _replayed(params: QueryParams, destinations: Collection[str]) -> str:
    by_destination = _named_counts(params.getlist("replayed"), destinations)
    if by_destination is None:
        return UNREADABLE
    if not by_destination:
        return "Nothing was replayed: no delivery matched."
    return f"Replayed {Replayed(by_destination)}."


def _reprocessed(params: QueryParams) -> str:
    outcomes = _named_counts(params.getlist("became"), OUTCOMES)
    changed = params.get("changed", "")
    if outcomes is None or not COUNT.fullmatch(changed):
        return UNREADABLE
    counts = ReprocessCounts(outcomes, int(changed))
    if counts.unchanged < 0:
        return UNREADABLE
    said = str(counts)
    return f"{said[:1].upper()}{said[1:]}."


def _named_counts(values: list[str], names: Collection[str]) -> dict[str, int] | None:
    """`name:count` pairs, each name one of `names` and given once; None if any is not."""
    found: dict[str, int] = {}
    for value in values:
        name, _, count = value.partition(":")
        if name not in names or name in found or not COUNT.fullmatch(count):
            return None
        found[name] = int(count)
    return found
