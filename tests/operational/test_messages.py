"""Each operational event's message for people: what happened, since when (UTC, to the
second), the numbers, a `receiver` command that the CLI really takes, and the console's
page (one that exists) only when RECEIVER_PUBLIC_URL is set and the console is served."""

import shlex
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import pytest
from starlette.routing import Mount, Route

from receiver.cli import cli
from receiver.console.mount import console_mount
from receiver.forward.breaker import MAX_PAUSE_SECONDS
from receiver.operational import messages
from receiver.operational.alerts import FIRST_DEAD_LETTERS, STUCK_RECORDS_COUNTED
from receiver.operational.events import OperationalEvent, OperationalType
from receiver.operational.messages import Message, message_for
from receiver.operators.spans import parse_span
from receiver.settings import Settings
from tests.conftest import Rivya, Sensitive
from tests.helpers import (
    ONE_ATTEMPT,
    ReceiverProcess,
    always,
    make_event,
    new_secret,
    wait_until,
)
from tests.operational.observed import Sinks

SINCE = datetime(2026, 12, 1, 23, 4, 5, 678_000, tzinfo=UTC)
PUBLIC = "https://receiver.example.com"
DATA: dict[OperationalType, dict[str, Any]] = {
    OperationalType.DELIVERY_DEAD: {
        "destination": "billing",
        "count": 7,
        "first": [
            {"event_id": f"evt_{n}", "event_type": "generation.failed", "attempts": 8}
            for n in range(FIRST_DEAD_LETTERS)
        ],
    },
    OperationalType.DESTINATION_PAUSED: {
        "destination": "billing",
        "consecutive_failures": 5,
        "pause_seconds": 30.0,
    },
    OperationalType.DESTINATION_RESUMED: {"destination": "billing", "paused_seconds": 754.2},
    OperationalType.DESTINATION_DISABLED: {
        "destination": "billing",
        "disabled_by": "410",
        "reason": "410 Gone",
        "pending": 42,
    },
    OperationalType.DESTINATION_ENABLED: {
        "destination": "billing",
        "disabled_by": "410",
        "disabled_seconds": 3725.0,
    },
    OperationalType.BACKLOG_STUCK: {
        "destination": "billing",
        "pending": 120,
        "oldest_age_seconds": 1000.4,
        "threshold_seconds": 900.0,
    },
    OperationalType.BACKLOG_CLEARED: {
        "destination": "billing",
        "pending": 1,
        "oldest_age_seconds": 3.0,
        "threshold_seconds": 900.0,
    },
    OperationalType.CREDITS_LOW: {"balance": 40, "threshold": 100},
    OperationalType.CREDITS_RECOVERED: {"balance": 5000, "threshold": 100},
    OperationalType.RECONCILE_REFUSED: {"code": "invalid_api_key"},
    OperationalType.RECONCILE_RESTORED: {"refused_code": "http_401"},
    OperationalType.RECORDS_STUCK: {
        "count": 3,
        "oldest_task_id": "task_abc",
        "threshold_seconds": 3600.0,
    },
}
# What each type's message must say besides its title: the numbers of its data.
NUMBERS = {
    OperationalType.DELIVERY_DEAD: [
        "7 deliveries to billing",
        "evt_0, evt_1, evt_2, evt_3, evt_4.",
    ],
    OperationalType.DESTINATION_PAUSED: [
        "5 failures in a row",
        "after 30 s",
        f"twice as long (up to {round(MAX_PAUSE_SECONDS)} s)",
    ],
    OperationalType.DESTINATION_RESUMED: ["paused 12 min"],
    OperationalType.DESTINATION_DISABLED: ["answered 410 Gone", "42 deliveries wait"],
    OperationalType.DESTINATION_ENABLED: ["disabled 1 h 2 min"],
    OperationalType.BACKLOG_STUCK: ["120 deliveries pending", "16 min old", "over 15 min"],
    OperationalType.BACKLOG_CLEARED: ["under 15 min"],
    OperationalType.CREDITS_LOW: ["40 credits", "threshold of 100"],
    OperationalType.CREDITS_RECOVERED: ["5000 credits", "threshold of 100"],
    OperationalType.RECONCILE_REFUSED: ["invalid_api_key"],
    OperationalType.RECONCILE_RESTORED: ["http_401"],
    OperationalType.RECORDS_STUCK: ["3 records have", "1 h", "task_abc"],
}


def event_of(kind: OperationalType) -> OperationalEvent:
    return OperationalEvent(kind, "c", SINCE, SINCE + timedelta(minutes=1), DATA[kind])


def line_starting(message: Message, start: str) -> str | None:
    return next((line for line in message.body.splitlines() if line.startswith(start)), None)


def console_paths() -> list[str]:
    settings = Settings(signing_secrets=(new_secret(),))
    mount: Mount = console_mount(settings)
    return [route.path for route in mount.routes if isinstance(route, Route)]


def test_every_type_has_a_message() -> None:
    assert set(DATA) == set(OperationalType)


@pytest.mark.parametrize("kind", list(OperationalType))
def test_each_message_says_since_when_the_numbers_and_what_to_run(kind: OperationalType) -> None:
    message = message_for(event_of(kind), None)
    assert message.title
    assert "Since 2026-12-01 23:04:05 (UTC)." in message.body
    for number in NUMBERS[kind]:
        assert number in message.body
    assert line_starting(message, "Console:") is None  # no public URL, no link


@pytest.mark.parametrize("kind", list(OperationalType))
def test_each_next_command_is_one_the_cli_takes(kind: OperationalType) -> None:
    next_line = line_starting(message_for(event_of(kind), None), "Next: ")
    assert next_line is not None
    words = shlex.split(next_line.removeprefix("Next: ").strip("`"))
    assert words[0] == "receiver"
    # Parsing alone (no callback runs): an unknown command or option raises.
    command: click.Command = cli
    args = words[1:]
    while isinstance(command, click.Group):
        found = command.get_command(click.Context(command), args[0])
        assert found is not None, args[0]
        command, args = found, args[1:]
    command.make_context(words[0], args)


@pytest.mark.parametrize("kind", list(OperationalType))
def test_with_a_public_url_each_message_links_a_console_page(kind: OperationalType) -> None:
    link = line_starting(message_for(event_of(kind), PUBLIC), "Console: ")
    assert link is not None
    path = link.removeprefix(f"Console: {PUBLIC}/console").split("?")[0]
    paths = console_paths()
    assert path in paths or any(
        p.endswith("{name}") and path.startswith(p.removesuffix("{name}")) for p in paths
    ), path


def test_the_test_message_says_what_it_is_and_nothing_of_the_service() -> None:
    message = messages.test_message()
    assert message.title == "Test message from the Rivya webhook receiver"
    assert "receiver notify test" in message.body
    assert "http" not in message.body


def next_command(message: Message) -> list[str]:
    line = line_starting(message, "Next: ")
    assert line is not None
    return shlex.split(line.removeprefix("Next: ").strip("`"))


def records_stuck(count: int, threshold_seconds: float) -> Message:
    data = {"count": count, "oldest_task_id": "task_abc", "threshold_seconds": threshold_seconds}
    kind = OperationalType.RECORDS_STUCK
    return message_for(OperationalEvent(kind, "c", SINCE, SINCE, data), None)


@pytest.mark.parametrize(
    ("threshold_seconds", "span"),
    [(1.0, "1s"), (3600.0, "1h"), (30 * 86_400.0, "30d"), (30 * 86_400.0 - 1, "43199m")],
)
def test_stuck_records_suggest_a_stale_span_the_parser_takes(
    threshold_seconds: float, span: str
) -> None:
    """30 days in seconds (2592000s) has more digits than a span takes: the largest whole
    unit instead, and rounded down (never a shorter list) when none is whole."""
    words = next_command(records_stuck(3, threshold_seconds))
    written = words[words.index("--stale-after") + 1]
    assert written == span
    taken = parse_span(written)
    assert taken is not None
    assert threshold_seconds - 60 < taken.total_seconds() <= max(1, threshold_seconds)


def test_stuck_records_past_the_count_read_more_than_it() -> None:
    body = records_stuck(STUCK_RECORDS_COUNTED + 1, 3600.0).body
    assert f"More than {STUCK_RECORDS_COUNTED:,} records have not ended" in body
    assert f"{STUCK_RECORDS_COUNTED + 1}" not in body
    assert f"{STUCK_RECORDS_COUNTED} records have" in records_stuck(STUCK_RECORDS_COUNTED, 1).body


def test_a_refused_key_suggests_a_pass_that_asks_rivya_not_a_dry_run() -> None:
    event = event_of(OperationalType.RECONCILE_REFUSED)
    assert next_command(message_for(event, None)) == ["receiver", "reconcile"]


@pytest.mark.parametrize("console", ["true", "false"])
def test_a_served_message_links_the_console_only_when_it_is_served(
    console: str,
    start_server: Callable[..., ReceiverProcess],
    sinks: Callable[..., Sinks],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
) -> None:
    """RECEIVER_PUBLIC_URL set: a real `receiver serve`'s message about a dead letter has
    the console's link with RECEIVER_CONSOLE=true, and none with false (a page not served)."""
    made = sinks(always(500))
    server = start_server(
        **made.settings,
        forward_retry_schedule=ONE_ATTEMPT,
        console=console,
        public_url=PUBLIC,
        alert_coalesce_seconds="0.5",
        alert_check_seconds="0.2",
    )
    sender = Rivya(server, secrets_in_use[0], sensitive)
    assert sender.send(make_event(event_type="generation.failed")).status_code == 200
    title = "Dead letters: billing"
    wait_until(lambda: made.messages(title) != [], timeout=30, what="the message")
    (message,) = made.messages(title)
    linked = [line for line in message.message.splitlines() if line.startswith("Console: ")]
    assert len(linked) == (1 if console == "true" else 0)
