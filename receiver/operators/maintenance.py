"""Operator commands that change stored data: replay, reprocess, prune. Each is audited."""

import functools
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.destinations import check_http_url
from receiver.exceptions import RejectedRequestError, StoppedPartWayError
from receiver.model import Outcome
from receiver.operators import actions, replays
from receiver.operators.inspection import since_option, type_option, until_option
from receiver.operators.nouns import counted
from receiver.operators.terminal import (
    emit,
    json_option,
    load_settings,
    parse_duration,
    parse_moment,
    progress,
    run_with_store,
    traced_command,
)
from receiver.store.filters import EventFilter
from receiver.store.retention import count_prunable
from receiver.tracing.pipeline import Tracing
from receiver.tracing.spans import start_span

WHO = "cli"


async def _existing(engine: AsyncEngine, which: EventFilter) -> list[str]:
    """The matching event IDs; every ID asked for by name must exist."""
    found = await actions.matching_ids(engine, which)
    missing = sorted(set(which.event_ids or ()) - set(found))
    if missing:
        raise click.ClickException(f"no event {', '.join(missing)}")
    return found


yes_option = click.option("--yes", is_flag=True, help="Do not ask for confirmation first.")


def _confirm(question: str, yes: bool) -> None:
    """Ask on stderr (stdout stays clean for --json); no answer, or no, stops the command."""
    if not yes:
        click.confirm(question, abort=True, err=True)


@click.command()
@click.argument("event_ids", nargs=-1)
@type_option
@since_option
@until_option
@click.option(
    "--delivery-state",
    type=click.Choice(replays.REPLAY_STATES),
    help="dead: each dead letter (of --destination), replayed to where it died; pending or "
    "delivered: the event's latest delivery to each destination (or to --destination), "
    "replayed only where it is in that state.",
)
@click.option(
    "--destination",
    help="Only to this destination (whatever its filters); default: each that wants the event.",
)
@click.option(
    "--to",
    "target_url",
    help="Deliver to this endpoint instead, this once, signed as --destination.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be replayed; change nothing.")
@yes_option
@json_option
def replay(
    event_ids: tuple[str, ...],
    event_type: str | None,
    since: str | None,
    until: str | None,
    delivery_state: str | None,
    destination: str | None,
    target_url: str | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Queue stored events for delivery again (same webhook-id), by ID or by filter.

    A running `receiver serve` or `receiver worker` delivers them, signed as usual. A replay
    by filter shows its count by destination and asks first (unless --yes). A destination's
    dead letters: `receiver replay --destination NAME --delivery-state dead`."""
    if bool(event_ids) == any(f is not None for f in (event_type, since, until, delivery_state)):
        raise click.UsageError(
            "give event IDs, or filters: --type, --since, --until, --delivery-state"
        )
    if target_url is not None:
        try:
            check_http_url(target_url)
        except ValueError as exc:
            raise click.UsageError(f"--to: {exc}") from exc
    which = EventFilter(
        event_ids=event_ids or None,
        type=event_type,
        since=parse_moment(since, "--since"),
        until=parse_moment(until, "--until"),
        delivery_state=delivery_state,
        destination=destination,
    )
    settings = load_settings()
    try:
        plan = replays.plan_replay(settings, which, destination, target_url)
    except RejectedRequestError as exc:
        raise click.ClickException(str(exc)) from exc

    async def run(engine: AsyncEngine, tracing: Tracing | None) -> replays.Replayed:
        if event_ids:
            await _existing(engine, which)
        if dry_run:
            return await replays.count_planned(engine, plan)
        # Resolved first, so that the numbers asked about are the ones it queues (at most:
        # a dead letter another replay claims meanwhile is not queued twice).
        resolved = await replays.resolve_plan(engine, plan)
        planned = replays.resolved_counts(resolved)
        if not event_ids and planned.deliveries:
            _confirm(f"Replay {planned}?", yes)
        total = sum(len(work) for work in resolved)
        # Its deliveries' attempts are children of this span, linked to their events'.
        tracer = tracing.tracer if tracing else None
        with (
            start_span(tracer, "receiver.replay", attributes={"receiver.who": WHO}),
            progress(total, "Replaying", quiet=as_json) as advance,
        ):
            return await replays.replay(engine, resolved, WHO, advance)

    try:
        with traced_command(settings, not dry_run) as tracing:
            result = run_with_store(functools.partial(run, tracing=tracing))
    except StoppedPartWayError as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "Would queue" if dry_run else "Queued"
    emit(result.as_json(), as_json, lambda _: f"{verb} {result}.")


@click.command()
@click.argument("event_ids", nargs=-1)
@click.option("--quarantined", is_flag=True, help="Every quarantined event (asks first).")
@yes_option
@json_option
def reprocess(event_ids: tuple[str, ...], quarantined: bool, yes: bool, as_json: bool) -> None:
    """Parse stored events again and apply them to their records, as after an upgrade
    that understands more. Safe to repeat. Says how many events changed outcome."""
    if bool(event_ids) == quarantined:
        raise click.UsageError("give event IDs or --quarantined")
    which = EventFilter(
        event_ids=event_ids or None, outcome=None if event_ids else Outcome.QUARANTINED
    )
    destinations = load_settings().forwarding

    async def run(engine: AsyncEngine) -> actions.ReprocessCounts:
        found = await _existing(engine, which)
        if quarantined and found:
            _confirm(f"Reprocess {counted(len(found), 'quarantined event')}?", yes)
        with progress(len(found), "Reprocessing", quiet=as_json) as advance:
            return await actions.reprocess(engine, found, WHO, destinations, advance)

    try:
        counts = run_with_store(run)
    except StoppedPartWayError as exc:
        raise click.ClickException(str(exc)) from exc
    emit(counts.as_json(), as_json, lambda _: str(counts).capitalize() + ".")


@click.command()
@click.option("--older-than", required=True, help="Age of events to remove: 90m, 24h, 30d, 2w.")
@click.option("--dry-run", is_flag=True, help="Count what would go; change nothing.")
@json_option
def prune(older_than: str, dry_run: bool, as_json: bool) -> None:
    """Remove old events whose deliveries are all finished, with those deliveries and their
    attempts. Records are kept. An event with a pending delivery stays, orphaned ones
    included (`serve` and `worker` dead-letter those after RECEIVER_RETENTION_DAYS)."""
    cutoff = datetime.now(UTC) - parse_duration(older_than, "--older-than")

    async def run(engine: AsyncEngine) -> dict[str, Any]:
        if dry_run:
            pruned = await count_prunable(engine, cutoff)
        else:
            pruned = await actions.prune_older_than(engine, cutoff, WHO)
        return {"dry_run": dry_run, "before": cutoff.isoformat(), **asdict(pruned)}

    def human(result: dict[str, Any]) -> str:
        verb = "Would remove" if dry_run else "Removed"
        return (
            f"{verb} {counted(result['events'], 'event')},"
            f" {counted(result['deliveries'], 'delivery', 'deliveries')} and"
            f" {counted(result['attempts'], 'attempt')} received before {result['before']}."
        )

    emit(run_with_store(run), as_json, human)
