"""The `receiver` command: serve, migrate, and operators' tools.

Each command reads settings from the environment (and `.env`) at its start and reports
a problem as one line on stderr with exit code 1; usage errors exit with 2.
"""

import asyncio
import sqlite3
import sys
from pathlib import Path

import aiohttp
import click
import orjson
import uvloop

from receiver.app import create_app
from receiver.forward.worker import run_worker
from receiver.logs import configure_logging, raised_at
from receiver.operators.destination_states import disable_command, enable_command
from receiver.operators.inspection import deliveries, destinations, events, records, stats
from receiver.operators.maintenance import prune, replay, reprocess
from receiver.operators.notify import notify
from receiver.operators.nouns import counted
from receiver.operators.pings import ping_command
from receiver.operators.reloads import reload_command
from receiver.operators.sample import SAMPLE_TYPES, build_sample_event, sign_sample_event
from receiver.operators.tasks import reconcile, tasks
from receiver.operators.terminal import (
    emit,
    json_option,
    load_settings,
    load_tracing,
    traced_command,
)
from receiver.outbound import open_session
from receiver.process import tune_process
from receiver.reloading import ignore_reloads_until_ready
from receiver.server import run_server, serve_options
from receiver.signatures import WebhookSecret
from receiver.store.backup import backup_sqlite
from receiver.store.database import create_engine, sqlite_path, upgrade_schema

DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8000/webhooks/rivya"
SEND_TEST_TIMEOUT_SECONDS = 10.0


@click.group()
def cli() -> None:
    """Receive Rivya webhooks: verified, deduplicated, stored, forwarded."""


for command in (
    events,
    records,
    deliveries,
    destinations,
    stats,
    replay,
    reprocess,
    prune,
    tasks,
    reconcile,
    notify,
):
    cli.add_command(command)
destinations.add_command(ping_command)
for command in (enable_command, disable_command, reload_command):
    destinations.add_command(command)


def main() -> None:
    """The console script. Click reports usage and expected errors itself; anything else
    is a bug, reported in one line like the logs do, never as a traceback."""
    try:
        cli()
    except Exception as exc:  # noqa: BLE001 - the last resort, by design
        click.echo(
            f"Error: unexpected {type(exc).__name__} at {raised_at(exc.__traceback__)}", err=True
        )
        sys.exit(1)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--no-forwarder",
    is_flag=True,
    help="Store events but leave delivering them to a separate `receiver worker`.",
)
def serve(host: str, port: int, no_forwarder: bool) -> None:
    """Run the HTTP service (brings the schema up to date first)."""
    ignore_reloads_until_ready()
    settings = load_settings()
    if settings.metrics_port == port:
        # Else a bind error naming only an address, once the application had started.
        raise click.ClickException(
            f"RECEIVER_METRICS_PORT: {port} is the main port (--port); give it another"
        )
    tracing = load_tracing(settings)
    configure_logging(settings.log_level, settings.log_format, trace_ids=tracing is not None)
    tune_process()
    # The app's lifespan shuts its tracing down.
    run_server(
        create_app(settings, run_forwarder=not no_forwarder, tracing=tracing),
        host=host,
        port=port,
        metrics_port=settings.metrics_port,
        **serve_options(settings.request_timeout_seconds),
    )


@cli.command()
def worker() -> None:
    """Forward stored events to their destinations, and reconcile records with Rivya's API
    when a key is set, without serving HTTP."""
    ignore_reloads_until_ready()
    settings = load_settings()
    if not settings.forwarding and settings.rivya_api_key is None:
        raise click.ClickException(
            "nothing to do: set RECEIVER_FORWARD_URL or RECEIVER_DESTINATIONS_FILE, or"
            " RECEIVER_RIVYA_API_KEY"
        )
    with traced_command(settings) as tracing:
        configure_logging(settings.log_level, settings.log_format, trace_ids=tracing is not None)
        tune_process()
        # uvloop, as `serve` runs under uvicorn: the worker's loop is mostly HTTP round trips.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run_worker(settings, tracing))


@cli.command()
def migrate() -> None:
    """Bring the database schema up to date, and nothing else."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)

    async def run() -> None:
        engine = create_engine(settings.database_url, settings.database_busy_timeout_seconds)
        try:
            await upgrade_schema(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    click.echo("The database schema is up to date.")


@cli.command()
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def backup(destination: Path, as_json: bool) -> None:
    """Copy the SQLite database to DESTINATION, a new file, while the service runs.

    Uses SQLite's online backup API; the copy is checked before it takes its name.
    For PostgreSQL, use pg_dump."""
    settings = load_settings()
    source = sqlite_path(settings.database_url)
    if source is None:
        raise click.ClickException("backup copies SQLite databases; for PostgreSQL use pg_dump")
    if not source.is_file():
        raise click.ClickException(f"no database at {source}")
    try:
        size = backup_sqlite(source, destination)
    except (sqlite3.Error, OSError) as exc:
        raise click.ClickException(f"backup failed: {exc}") from exc
    emit(
        {"source": str(source), "destination": str(destination), "bytes": size},
        as_json,
        lambda o: f"Copied {o['source']} to {o['destination']} ({counted(o['bytes'], 'byte')}).",
    )


@cli.group()
def secret() -> None:
    """Signing secrets."""


@secret.command("new")
@json_option
def secret_new(as_json: bool) -> None:
    """Print a fresh whsec_ secret (32 random bytes)."""
    secret = WebhookSecret.generate().reveal()
    emit({"secret": secret}, as_json, lambda data: str(data["secret"]))


@cli.command("send-test")
@click.option("--url", default=DEFAULT_WEBHOOK_URL, show_default=True)
@click.option(
    "--type",
    "event_type",
    type=click.Choice(SAMPLE_TYPES),
    default=SAMPLE_TYPES[0],
    show_default=True,
)
@json_option
def send_test(url: str, event_type: str, as_json: bool) -> None:
    """POST a realistic event signed with the first signing secret; fail if not accepted."""
    settings = load_settings()
    event = build_sample_event(event_type)
    body, headers = sign_sample_event(settings.signing_secrets[0], event)
    status, text = asyncio.run(_request("POST", url, SEND_TEST_TIMEOUT_SECONDS, body, headers))
    try:
        answer = orjson.loads(text)
    except orjson.JSONDecodeError:
        answer = text
    outcome = {
        "type": event_type,
        "event_id": event["id"],
        "task_id": event["data"]["id"],
        "http_status": status,
        "answer": answer,
    }
    emit(
        outcome,
        as_json,
        lambda o: (
            f"{o['type']} {o['event_id']} for {o['task_id']}: HTTP {o['http_status']}\n" + text
        ),
    )
    accepted = isinstance(answer, dict) and answer.get("status") == "accepted"
    if status != 200 or not accepted:
        raise click.ClickException("the receiver did not accept the test event")


@cli.command()
@click.argument("url", default="http://127.0.0.1:8000/healthz")
@click.option("--timeout", default=2.0, show_default=True, type=click.FloatRange(min=0.1))
def probe(url: str, timeout: float) -> None:
    """Exit 0 if URL answers 200, else 1: the container's health check (slim images have
    no curl)."""
    status, _ = asyncio.run(_request("GET", url, timeout))
    if status != 200:
        raise click.ClickException(f"{url} answered {status}")


async def _request(
    method: str,
    url: str,
    timeout_seconds: float,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """One call, through a session of its own; a failure to get an answer is one line."""
    try:
        async with (
            open_session(timeout_seconds) as session,
            session.request(method, url, data=body, headers=headers) as response,
        ):
            return response.status, await response.text(errors="replace")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise click.ClickException(f"could not reach {url}: {type(exc).__name__}") from exc
