"""Human-readable renderings of what the operator commands return (`--json` skips these)."""

import shlex
from typing import Any

import orjson

from receiver.credits import explain_credits
from receiver.forward.failures import describe_failure
from receiver.operators.nouns import counted
from receiver.operators.terminal import details, table
from receiver.store.deliveries import DeliveryState
from receiver.store.health import COUNTED
from receiver.store.tables import GENERATION_COLUMNS

EVENT_KEYS = (
    "id",
    "type",
    "api_version",
    "created_at",
    "received_at",
    "task_id",
    "outcome",
    "quarantine_reason",
    "trace_id",
)
RECORD_KEYS = (
    *GENERATION_COLUMNS,
    "credits_returned",
    "reference",
    "registered_at",
    "reconciled_at",
    "reconcile_state",
)
RECORD_COLUMNS = ("changed_at", "task_id", "status", "model", "reference", "reconcile_state")
EVENT_COLUMNS = ("received_at", "id", "type", "outcome", "task_id", "quarantine_reason")
DELIVERY_COLUMNS = (
    "id",
    "event_id",
    "destination",
    "state",
    "attempts",
    "last_status_code",
    "reason",
    "last_error",
    "next_attempt_at",
)
ATTEMPT_COLUMNS = ("attempted_at", "status_code", "reason", "error_class", "duration_ms")
DESTINATION_COUNTS = ("destination", *COUNTED)
DESTINATION_KEYS = (
    "url",
    "event_types",
    "outcomes",
    "max_in_flight",
    "max_per_second",
    "rate_last_minute",
    *COUNTED,
    "oldest_pending",
    "last_success_at",
    "last_failure_at",
    "consecutive_failures",
    "disabled_at",
    "disabled_by",
    "disabled_reason",
)


def event_page(page: dict[str, Any]) -> str:
    return _with_cursor(table(page["events"], EVENT_COLUMNS, "No events."), page["next_cursor"])


def delivery_page(page: dict[str, Any]) -> str:
    worded = [
        d
        | {
            "reason": describe_failure(d["last_error"], d["last_status_code"]),
            "next_attempt_at": next_attempt(d),
        }
        for d in page["deliveries"]
    ]
    listing = table(worded, DELIVERY_COLUMNS, "No deliveries.")
    return _with_cursor(listing, page["next_cursor"])


def event(shown: dict[str, Any]) -> str:
    payload = orjson.dumps(shown["payload"], option=orjson.OPT_INDENT_2).decode()
    parts = [details(shown, EVENT_KEYS), "", "Payload:", payload, ""]
    for delivery in shown["deliveries"]:
        parts.append(
            f"Delivery {delivery['id']} to {delivery['destination']}: {delivery['state']},"
            f" {counted(delivery['attempts'], 'attempt')}"
            + (f", next at {at}" if (at := next_attempt(delivery)) else "")
        )
        worded = [
            a | {"reason": describe_failure(a["error_class"], a["status_code"], a["duration_ms"])}
            for a in delivery["attempt_log"]
        ]
        parts.append(table(worded, ATTEMPT_COLUMNS, "(no attempt yet)"))
    if not shown["deliveries"]:
        parts.append("No deliveries.")
    return "\n".join(parts)


def record(shown: dict[str, Any]) -> str:
    explained = explain_credits(shown["reserved_credits"], shown["final_credits"])
    worded = {
        "reserved_credits": explained.reserved,
        "final_credits": explained.final,
        "credits_returned": explained.returned,
    }
    return details(shown | worded, RECORD_KEYS)


def record_page(page: dict[str, Any]) -> str:
    listing = table(page["records"], RECORD_COLUMNS, "No records.")
    return _with_cursor(listing, page["next_cursor"])


def registration(result: dict[str, Any]) -> str:
    verb = "Registered" if result["created"] else "Already known:"
    return f"{verb} {result['record']['task_id']}\n" + record(result["record"])


def reconciliation(result: dict[str, Any]) -> str:
    if result["dry_run"]:
        due = counted(result["due"], "record is", "records are")
        return f"{due} due; none was asked about (dry run)."
    balance = result["credits"]
    return (
        f"Asked Rivya about {counted(result['asked'], 'record')}: {result['changed']} changed,"
        f" {result['not_found']} not found, {result['failed']} failed."
        + (f" Credits: {balance}." if balance is not None else "")
    )


def stats(numbers: dict[str, Any]) -> str:
    oldest = numbers["oldest_pending_delivery"]
    counts = [
        ("Deliveries", "state", numbers["deliveries"]),
        ("Records", "status", numbers["records"]),
    ]
    return "\n\n".join(
        [
            "Events\n" + table(numbers["events"], ("type", "outcome", "count"), "none"),
            *(
                f"{title}\n"
                + table([{key: k, "count": n} for k, n in by.items()], (key, "count"), "none")
                for title, key, by in counts
            ),
            "Deliveries by destination\n"
            + table(numbers["destinations"], DESTINATION_COUNTS, "none"),
            "Credits\n"
            + table(numbers["credits"], ("model", "records", "reserved", "final"), "none"),
            "Failure codes\n" + table(numbers["failure_codes"], ("code", "count"), "none"),
            "Oldest pending delivery: "
            + (f"{oldest['created_at']} ({oldest['age_seconds']} s ago)" if oldest else "none"),
            f"Records stale (not terminal, unchanged too long): {numbers['records_stale']}",
            "Rivya credits: "
            + (
                f"{balance['current_credits']} (read {balance['read_at']})"
                if (balance := numbers["rivya_credits"])
                else "never read (reconciliation reads them)"
            ),
        ]
    )


def destinations(listing: dict[str, Any]) -> str:
    if not listing["destinations"]:
        return "No destinations: set RECEIVER_FORWARD_URL or RECEIVER_DESTINATIONS_FILE."
    parts = []
    for entry in listing["destinations"]:
        title = entry["destination"] + ("" if entry["configured"] else " (not configured)")
        title += " (disabled)" if entry["disabled_at"] else ""
        oldest = entry["oldest_pending"]
        shown = {**entry, "oldest_pending": f"{oldest['age_seconds']} s ago" if oldest else None}
        if entry["configured"] and entry["max_per_second"] is None:
            shown["max_per_second"] = "unlimited"
        shown["rate_last_minute"] = f"{entry['rate_last_minute']}/s"
        hints = _dead_letters_hint(entry) + _enable_hint(entry)
        parts.append(f"{title}\n" + details(shown, DESTINATION_KEYS) + hints)
    return "\n\n".join(parts)


def _dead_letters_hint(entry: dict[str, Any]) -> str:
    """The one command that replays a destination's dead letters, there alone."""
    if not entry["dead"] or not entry["configured"]:
        return ""
    name = shlex.quote(entry["destination"])
    return (
        f"\nReplay its {counted(entry['dead'], 'dead letter')}: "
        f"receiver replay --destination {name} --delivery-state dead"
    )


def _enable_hint(entry: dict[str, Any]) -> str:
    if not entry["disabled_at"]:
        return ""
    return f"\nEnable it: receiver destinations enable {shlex.quote(entry['destination'])}"


def next_attempt(delivery: dict[str, Any]) -> str | None:
    """When a delivery is tried next: only a pending one is (delivered, dead, replayed and
    recovered ones are finished, and an orphaned one waits for its destination to be back);
    the others keep the time they last had, which reads as a promise."""
    return delivery["next_attempt_at"] if delivery["state"] == DeliveryState.PENDING else None


def _with_cursor(listing: str, cursor: str | None) -> str:
    return f"{listing}\nMore: --cursor {cursor}" if cursor else listing
