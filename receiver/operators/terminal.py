"""What every operator command shares: settings, the database, dates, and output.

Problems become one line on stderr and exit code 1 (click's `ClickException`), never a
traceback; `--json` prints one JSON document, also when there is nothing to show.
"""

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.exceptions import (
    InvalidRequestError,
    RejectedRequestError,
    SettingsError,
    StoreUnavailableError,
)
from receiver.logs import configure_logging
from receiver.operators.moments import read_moment
from receiver.operators.spans import parse_span
from receiver.settings import Settings
from receiver.store.database import create_engine, schema_is_current, sqlite_path
from receiver.tracing.pipeline import Tracing, start_tracing

T = TypeVar("T")
PROGRESS_FROM = 1000

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def load_settings() -> Settings:
    try:
        return Settings.from_environment(os.environ, Path(".env"))
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


def load_tracing(settings: Settings) -> Tracing | None:
    """The OTEL_* variables' tracing pipeline, or None; a bad value is a one-line error."""
    try:
        return start_tracing(os.environ, settings.trace_trust_incoming)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


@contextmanager
def traced_command(settings: Settings, wanted: bool = True) -> Iterator[Tracing | None]:
    """For a command that acts (a replay, a reconciliation pass, the worker): tracing as
    the OTEL_* variables ask, its spans exported as the command ends."""
    tracing = load_tracing(settings) if wanted else None
    try:
        yield tracing
    finally:
        if tracing is not None:
            tracing.shutdown()


def run_with_store(operation: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run `operation` against the configured database, which must exist and be current."""
    settings = load_settings()
    # Operators' audit lines go to stderr, so stdout stays clean for --json.
    configure_logging(settings.log_level, settings.log_format, sys.stderr)
    path = sqlite_path(settings.database_url)
    if path is not None and not path.is_file():
        raise click.ClickException(f"no database at {path}: run `receiver migrate` first")

    async def main() -> T:
        engine = create_engine(settings.database_url, settings.database_busy_timeout_seconds)
        try:
            if not await schema_is_current(engine):
                raise click.ClickException(
                    "the database schema is not current: run `receiver migrate`"
                )
            return await operation(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except RejectedRequestError as exc:
        raise click.ClickException(str(exc)) from exc
    except (StoreUnavailableError, SQLAlchemyError, OSError) as exc:
        cause = exc.__cause__ if isinstance(exc, StoreUnavailableError) else exc
        raise click.ClickException(
            f"cannot use the database ({type(cause).__name__}); is it reachable?"
        ) from exc


def parse_moment(text: str | None, option: str) -> datetime | None:
    """As the console reads it (`read_moment`), a time without a zone in UTC."""
    if text is None:
        return None
    try:
        return read_moment(text, option, UTC, datetime.now(UTC))
    except InvalidRequestError as exc:
        raise click.ClickException(str(exc)) from exc


def parse_duration(text: str, option: str) -> timedelta:
    span = parse_span(text)
    if span is None:
        raise click.ClickException(f"{option}: {text!r} is not a span like 90m, 24h, 30d or 2w")
    return span


@contextmanager
def progress(
    total: int, label: str, quiet: bool, at_least: int = PROGRESS_FROM
) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for sets of `at_least` items; `advance(n)` moves it on by n."""
    if quiet or total < at_least:
        yield lambda _: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


def emit(data: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() if as_json else human(data))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], empty: str) -> str:
    if not rows:
        return empty
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [[c.upper() for c in columns], *cells]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def details(values: dict[str, Any], keys: Sequence[str]) -> str:
    width = max(len(key) for key in keys)
    return "\n".join(f"{key.ljust(width)}  {_cell(values.get(key))}" for key in keys)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)
