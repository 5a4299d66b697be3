"""What people are told about an operational event: one short message each, in words.

A message says what happened, since when (UTC, to the second), the numbers, and where to
look next: a `receiver` command that exists, and the console's page when
RECEIVER_PUBLIC_URL says where the console is. It is built from the event's `data` alone
(names, numbers, IDs, Rivya's error code), which never holds a secret, a URL or a body, so
neither can a message. Notification URLs are secrets and never reach a message either.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from receiver.forward.breaker import MAX_PAUSE_SECONDS
from receiver.operational.alerts import STUCK_RECORDS_COUNTED
from receiver.operational.events import OperationalEvent, OperationalType
from receiver.operators.spans import span_text
from receiver.store.destination_states import BY_GONE

# How Apprise's services colour or mark a message (its NotifyType values); kept as text here
# so that what a message says does not depend on the library that sends it.
INFO = "info"
SUCCESS = "success"
WARNING = "warning"
FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    body: str
    # One of INFO, SUCCESS, WARNING, FAILURE.
    severity: str = INFO


def message_for(event: OperationalEvent, public_url: str | None) -> Message:
    """The message about `event`; console links only when `public_url` is set."""
    data = event.data
    title, lines, severity, command, page = _WRITERS[event.type](data)
    since = _utc(event.since)
    body = [*lines, f"Since {since} (UTC).", f"Next: `{command}`"]
    if public_url is not None:
        body.append(f"Console: {public_url}/console/{page}")
    return Message(title=title, body="\n".join(body), severity=severity)


def test_message() -> Message:
    """What `receiver notify test` sends: proof the URL works, and nothing about the service."""
    now = _utc(datetime.now(UTC))
    return Message(
        title="Test message from the Rivya webhook receiver",
        body=f"Sent by `receiver notify test` at {now} (UTC): this notification URL works.",
        severity=INFO,
    )


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _deliveries_page(destination: str) -> str:
    return "deliveries?" + urlencode({"state": "dead", "destination": destination})


def _destination_page(destination: str) -> str:
    return "destinations/" + quote(destination, safe="")


def _counted(count: Any, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _duration(seconds: Any) -> str:
    """45 s, 15 min, 2 h 5 min: whole units, as a person reads a pause or an age."""
    whole = round(float(seconds))
    if whole < 120:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min" if minutes % 60 else f"{minutes // 60} h"


# Each writer answers: title, lines, severity, the command to run next, the console page.
Written = tuple[str, list[str], str, str, str]


def _dead(data: Mapping[str, Any]) -> Written:
    destination, count = data["destination"], data["count"]
    first = [str(entry["event_id"]) for entry in data.get("first", [])]
    lines = [f"{_counted(count, 'delivery', 'deliveries')} to {destination} gave up (dead)."]
    if first:
        lines.append("First: " + ", ".join(first) + ".")
    return (
        f"Dead letters: {destination}",
        lines,
        FAILURE,
        f"receiver deliveries list --state dead --destination {destination}",
        _deliveries_page(destination),
    )


def _paused(data: Mapping[str, Any]) -> Written:
    destination = data["destination"]
    failures = _counted(data["consecutive_failures"], "failure", "failures")
    return (
        f"Destination paused: {destination}",
        [
            f"{destination} is paused after {failures} in a row; one attempt is tried after"
            f" {_duration(data['pause_seconds'])}, and after each that fails a pause twice as"
            f" long (up to {_duration(MAX_PAUSE_SECONDS)}), until one succeeds."
        ],
        WARNING,
        "receiver destinations list",
        _destination_page(destination),
    )


def _resumed(data: Mapping[str, Any]) -> Written:
    destination = data["destination"]
    return (
        f"Destination resumed: {destination}",
        [f"{destination} takes deliveries again, paused {_duration(data['paused_seconds'])}."],
        SUCCESS,
        "receiver destinations list",
        _destination_page(destination),
    )


def _disabled(data: Mapping[str, Any]) -> Written:
    destination, by = data["destination"], data["disabled_by"]
    # The forwarder writes "410": the subscriber said it is gone for good.
    why = "it answered 410 Gone" if by == BY_GONE else f"{by} disabled it"
    reason = f" ({data['reason']})" if data.get("reason") and by != BY_GONE else ""
    pending = _counted(data["pending"], "delivery waits", "deliveries wait")
    return (
        f"Destination disabled: {destination}",
        [
            f"Nothing is sent to {destination}: {why}{reason}. {pending}, and new events are"
            " still queued to it, until it is enabled."
        ],
        FAILURE,
        f"receiver destinations enable {destination}",
        _destination_page(destination),
    )


def _enabled(data: Mapping[str, Any]) -> Written:
    destination = data["destination"]
    return (
        f"Destination enabled: {destination}",
        [
            f"{destination} is sent its pending deliveries again, disabled"
            f" {_duration(data['disabled_seconds'])}."
        ],
        SUCCESS,
        "receiver destinations list",
        _destination_page(destination),
    )


def _backlog(data: Mapping[str, Any], stuck: bool) -> Written:
    destination = data["destination"]
    pending = _counted(data["pending"], "delivery", "deliveries")
    oldest = f"the oldest {_duration(data['oldest_age_seconds'])} old"
    threshold = _duration(data["threshold_seconds"])
    if stuck:
        title, severity = f"Backlog stuck: {destination}", WARNING
        line = f"{pending} pending to {destination}, {oldest} (over {threshold})."
    else:
        title, severity = f"Backlog cleared: {destination}", SUCCESS
        line = f"{destination}'s oldest pending delivery is under {threshold} again ({pending})."
    return (
        title,
        [line],
        severity,
        f"receiver deliveries list --state pending --destination {destination}",
        _destination_page(destination),
    )


def _credits(data: Mapping[str, Any], low: bool) -> Written:
    balance, threshold = data["balance"], data["threshold"]
    if low:
        title, severity = "Rivya credits low", WARNING
        line = f"The balance is {balance} credits, at or under the threshold of {threshold}."
    else:
        title, severity = "Rivya credits recovered", SUCCESS
        line = f"The balance is {balance} credits, over the threshold of {threshold} again."
    return title, [line], severity, "receiver stats", ""


def _refused(data: Mapping[str, Any]) -> Written:
    return (
        "Rivya refuses the API key",
        [
            f"Rivya's API answers {data['code']}: reconciliation stops until the key is"
            " accepted (check RECEIVER_RIVYA_API_KEY)."
        ],
        FAILURE,
        # A pass asks Rivya for the balance first: it stops with the code while the key is
        # refused (a dry run asks nothing).
        "receiver reconcile",
        "records?status=processing",
    )


def _restored(data: Mapping[str, Any]) -> Written:
    return (
        "Rivya accepts the API key again",
        [f"Reconciliation runs again (it was refused: {data['refused_code']})."],
        SUCCESS,
        "receiver reconcile --dry-run",
        "records?status=processing",
    )


def _records(data: Mapping[str, Any]) -> Written:
    # The count stops at STUCK_RECORDS_COUNTED + 1: past it, "more than".
    count = (
        f"More than {STUCK_RECORDS_COUNTED:,} records have"
        if data["count"] > STUCK_RECORDS_COUNTED
        else _counted(data["count"], "record has", "records have")
    )
    threshold = data["threshold_seconds"]
    return (
        "Records not ending",
        [
            f"{count} not ended for over {_duration(threshold)}; the oldest is task"
            f" {data['oldest_task_id']}."
        ],
        WARNING,
        f"receiver records list --stale-after {span_text(float(threshold))}",
        "records?status=processing",
    )


_WRITERS: dict[OperationalType, Callable[[Mapping[str, Any]], Written]] = {
    OperationalType.DELIVERY_DEAD: _dead,
    OperationalType.DESTINATION_PAUSED: _paused,
    OperationalType.DESTINATION_RESUMED: _resumed,
    OperationalType.DESTINATION_DISABLED: _disabled,
    OperationalType.DESTINATION_ENABLED: _enabled,
    OperationalType.BACKLOG_STUCK: lambda data: _backlog(data, stuck=True),
    OperationalType.BACKLOG_CLEARED: lambda data: _backlog(data, stuck=False),
    OperationalType.CREDITS_LOW: lambda data: _credits(data, low=True),
    OperationalType.CREDITS_RECOVERED: lambda data: _credits(data, low=False),
    OperationalType.RECONCILE_REFUSED: _refused,
    OperationalType.RECONCILE_RESTORED: _restored,
    OperationalType.RECORDS_STUCK: _records,
}
