"""`receiver destinations ping NAME`: one signed test event to a destination, from the
operator's shell (`forward.ping`); the database is not used."""

import asyncio
import sys
from typing import Any

import click

from receiver.destinations import find_destination
from receiver.exceptions import InvalidRequestError
from receiver.forward.ping import PingAnswer, Pinger
from receiver.logs import configure_logging
from receiver.operators.maintenance import WHO
from receiver.operators.terminal import details, emit, json_option, load_settings

SHOWN = ("destination", "event_id", "http_status", "failure", "duration_ms")


@click.command("ping")
@click.argument("name")
@json_option
def ping_command(name: str, as_json: bool) -> None:
    """Send NAME one signed receiver.ping event (not stored) and print its answer: status,
    time and the first 512 bytes of its body, escaped. Exit 0 on a 2xx, else 1."""
    settings = load_settings()
    # The audit line goes to stderr, so stdout stays clean for --json.
    configure_logging(settings.log_level, settings.log_format, sys.stderr)
    try:
        destination = find_destination(settings.forwarding, name)
    except InvalidRequestError as exc:
        raise click.ClickException(str(exc)) from exc

    async def ping() -> PingAnswer:
        async with Pinger(settings.forward_timeout_seconds) as pinger:
            return await pinger.ping(destination, WHO)

    answer = asyncio.run(ping())
    emit(answer.as_json(), as_json, _shown)
    if not answer.ok:
        sys.exit(1)


def _shown(answer: dict[str, Any]) -> str:
    more = " (more not shown)" if answer["body_truncated"] else ""
    body = answer["body"] or "(empty)"
    return f"{details(answer, SHOWN)}\nbody{more}:\n{body}"
