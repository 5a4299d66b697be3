"""`receiver notify test`: a test message to every RECEIVER_NOTIFY_URLS URL, each one's
result by its position and scheme (the URLs are secrets: never printed)."""

import asyncio
import sys
from dataclasses import asdict
from typing import Any

import click

from receiver.logs import configure_logging
from receiver.operational.notifier import Notifier
from receiver.operators.terminal import emit, json_option, load_settings


@click.group()
def notify() -> None:
    """Messages to people about operational events (RECEIVER_NOTIFY_URLS)."""


@notify.command("test")
@json_option
def notify_test(as_json: bool) -> None:
    """Send a test message to every notification URL, once each, and print each result;
    exit 1 if any failed."""
    settings = load_settings()
    if not settings.notify_urls:
        raise click.ClickException("RECEIVER_NOTIFY_URLS is not set")
    # Log lines (Apprise's, withheld to their level) go to stderr: stdout stays the results.
    configure_logging(settings.log_level, settings.log_format, sys.stderr)
    notifier = Notifier(settings.notify_urls, settings.public_url)
    results = asyncio.run(notifier.test())
    emit([asdict(result) for result in results], as_json, _lines)
    if not all(result.ok for result in results):
        raise click.ClickException("not every notification URL took the test message")


def _lines(results: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{r['position']} {r['scheme']}: " + ("sent" if r["ok"] else f"failed ({r['error']})")
        for r in results
    )
