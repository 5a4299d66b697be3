"""Operator commands for the product's tasks: register one, and reconcile records with
Rivya's API. Each is audited."""

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.operators import actions, views
from receiver.operators.terminal import (
    emit,
    json_option,
    load_settings,
    parse_duration,
    progress,
    run_with_store,
    traced_command,
)
from receiver.reconcile.reconciler import Reconciler
from receiver.store.database import transaction
from receiver.store.queries import get_record
from receiver.store.reconciliation import count_due

WHO = "cli"


@click.group()
def tasks() -> None:
    """Tasks the product submitted to Rivya."""


@tasks.command("register")
@click.argument("task_id")
@click.option("--reference", help="The product's own key for the task (at most 128 characters).")
@json_option
def tasks_register(task_id: str, reference: str | None, as_json: bool) -> None:
    """Register TASK_ID, so that reconciliation finds it if its webhook never comes.
    Idempotent: an existing record is shown as it is."""

    async def run(engine: AsyncEngine) -> dict[str, Any]:
        record, created = await actions.register(engine, task_id, reference, WHO)
        return {"created": created, "record": record}

    emit(run_with_store(run), as_json, views.registration)


@click.command()
@click.option(
    "--stale-after",
    help="Ask about records unchanged for this long: 90m, 24h (default: the setting's).",
)
@click.option(
    "--task", "task_ids", multiple=True, help="Ask about this task now, whatever its state."
)
@click.option("--dry-run", is_flag=True, help="Count the records due; ask nothing.")
@json_option
def reconcile(
    stale_after: str | None, task_ids: tuple[str, ...], dry_run: bool, as_json: bool
) -> None:
    """Ask Rivya's API about the records it has not reported the end of, once: apply what
    it says, store and forward the result of each task that has ended."""
    settings = load_settings()
    after = (
        parse_duration(stale_after, "--stale-after") if stale_after else settings.reconcile_after
    )
    if not dry_run and settings.rivya_api_key is None:
        raise click.ClickException(
            "RECEIVER_RIVYA_API_KEY is not set: reconciliation asks Rivya's API"
        )

    async def run(engine: AsyncEngine) -> dict[str, Any]:
        async with transaction(engine) as connection:
            for task_id in task_ids:
                await get_record(connection, task_id)  # each must exist
            due = len(task_ids) or await count_due(connection, after, datetime.now(UTC))
        if dry_run:
            return {"dry_run": True, "due": due}
        async with Reconciler(engine, settings, tracing=tracing) as reconciler:
            with progress(due, "Asking Rivya", quiet=as_json, at_least=1) as advance:
                report = await reconciler.run_pass(WHO, after, task_ids or None, advance)
        return {"dry_run": False, "due": due, **asdict(report)}

    # The pass is traced as the service's are, when the OTEL_* variables say so: its span,
    # its calls, and the events it stores (whose deliveries are then its children).
    with traced_command(settings, not dry_run) as tracing:
        result = run_with_store(run)
    emit(result, as_json, views.reconciliation)
    if result.get("result", "ok") != "ok":
        raise click.ClickException(f"the pass stopped: {result['result']} ({result['error_code']})")
