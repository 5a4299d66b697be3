"""Replays of the service's own events as operators run them: `receiver replay` in its own
process against a real database of each backend, holding a Rivya event and the service's
own `receiver.credits.low`. A replay to a destination named, or with --to, sends every
matching Rivya event, but the service's own only where the destination names them or the
replay asks for them, by --type or by event ID."""

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.model import Event
from receiver.operational.alerts import Alerts
from receiver.operational.events import OperationalType
from receiver.settings import Settings
from receiver.store.deliveries import DeliveryState
from receiver.store.events import Submission, run_on, store_events
from receiver.store.tables import deliveries, events
from tests.helpers import run_cli, write_destinations

pytestmark = pytest.mark.anyio

OURS = OperationalType.CREDITS_LOW.value
# Where nothing listens: these tests queue deliveries, no forwarder sends them.
NOWHERE = "http://127.0.0.1:9/hooks"


async def events_of_both(engine: AsyncEngine, new_secrets: Callable[[], str]) -> str:
    """Rivya's `evt_1`, and the service's own `receiver.credits.low` raised by the
    operational checks (a balance at the threshold); the latter's ID."""
    submission = Submission(
        Event("evt_1", "generation.succeeded"), "evt_1", b"{}", datetime.now(UTC)
    )

    def work(connection: Connection) -> None:
        store_events(run_on(connection), connection.dialect, [submission], [])

    async with engine.begin() as connection:
        await connection.run_sync(work)
    settings = Settings(signing_secrets=new_secrets(), low_credits_threshold=10)
    await Alerts(engine, settings).credits_read(10)
    async with engine.connect() as connection:
        return str(await connection.scalar(sa.select(events.c.id).where(events.c.type == OURS)))


def environment(
    engine: AsyncEngine, new_secrets: Callable[[], str], tmp_path: Path
) -> dict[str, str]:
    """The CLI's settings: `default` (no filters) and `ops`, subscribed to `receiver.*`."""
    ops = {
        "name": "ops",
        "url": NOWHERE,
        "signing_secrets": new_secrets(),
        "event_types": ["receiver.*"],
    }
    return {
        "RECEIVER_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "RECEIVER_SIGNING_SECRETS": new_secrets(),
        "RECEIVER_FORWARD_URL": NOWHERE,
        "RECEIVER_FORWARD_SIGNING_SECRETS": new_secrets(),
        "RECEIVER_DESTINATIONS_FILE": write_destinations(tmp_path / "destinations.toml", ops),
    }


def replay(env: dict[str, str], cwd: Path, *args: str) -> dict[str, int]:
    """`receiver replay ARGS --json`, confirmed: deliveries queued by destination."""
    ran = run_cli("replay", *args, "--yes", "--json", env=env, cwd=cwd)
    assert ran.returncode == 0, ran.stderr
    answer: dict[str, Any] = orjson.loads(ran.stdout)
    return dict(answer["by_destination"])


async def queued(engine: AsyncEngine) -> list[tuple[str, str]]:
    """(event ID, destination) of each delivery pending, and emptied: each replay's own."""
    async with engine.begin() as connection:
        pending = deliveries.c.state == DeliveryState.PENDING.value
        found = await connection.execute(
            sa.select(deliveries.c.event_id, deliveries.c.destination)
            .where(pending)
            .order_by(deliveries.c.id)
        )
        rows = [(str(event_id), str(to)) for event_id, to in found]
        await connection.execute(sa.delete(deliveries).where(pending))
        return rows


async def test_a_replay_to_a_destination_named_sends_the_services_own_only_by_their_type(
    engine: AsyncEngine, new_secrets: Callable[[], str], tmp_path: Path
) -> None:
    """`--destination default --since 1h` (default names no `receiver.*` type) counts and
    queues Rivya's event, none of the service's own; with `--type receiver.credits.low`, the
    service's own event is what it asked for, and is queued."""
    ours = await events_of_both(engine, new_secrets)
    env = environment(engine, new_secrets, tmp_path)
    last_hour = ("--destination", "default", "--since", "1h")
    assert replay(env, tmp_path, *last_hour, "--dry-run") == {"default": 1}
    assert replay(env, tmp_path, *last_hour) == {"default": 1}
    assert await queued(engine) == [("evt_1", "default")]
    asked = replay(env, tmp_path, "--destination", "default", "--since", "1h", "--type", OURS)
    assert asked == {"default": 1}
    assert await queued(engine) == [(ours, "default")]


async def test_the_services_own_go_by_id_to_where_named_and_never_in_a_copy_elsewhere(
    engine: AsyncEngine, new_secrets: Callable[[], str], tmp_path: Path
) -> None:
    """By its ID, the service's own event is replayed to `default`; a copy of the last hour
    sent elsewhere (--to) holds Rivya's event alone; named, `ops` (subscribed to
    `receiver.*`) is sent both."""
    ours = await events_of_both(engine, new_secrets)
    env = environment(engine, new_secrets, tmp_path)
    assert replay(env, tmp_path, ours, "--destination", "default") == {"default": 1}
    assert await queued(engine) == [(ours, "default")]
    elsewhere = ("--since", "1h", "--destination", "default", "--to", "http://127.0.0.1:9/copy")
    assert replay(env, tmp_path, *elsewhere) == {"default": 1}
    assert await queued(engine) == [("evt_1", "default")]
    assert replay(env, tmp_path, "--destination", "ops", "--since", "1h") == {"ops": 2}
    assert sorted(await queued(engine)) == sorted([("evt_1", "ops"), (ours, "ops")])
