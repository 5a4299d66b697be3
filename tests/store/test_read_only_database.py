"""A PostgreSQL that takes no writes (a standby, or a primary demoted by a failover, that the
database's address still names) is the database's absence, not the events' own fault."""

import asyncio

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from receiver.exceptions import StoreUnavailableError
from receiver.store.database import create_engine, upgrade_schema
from receiver.store.writer import EventWriter
from tests.databases import PostgresServer
from tests.helpers import destination, make_event
from tests.store.test_writer import submission

pytestmark = pytest.mark.anyio


async def test_a_read_only_postgresql_fails_the_whole_batch_at_once(
    postgres_server: PostgresServer,
) -> None:
    """Every request of the batch is a 503 after one transaction (one `store_failed` for the
    batch), not retried event by event. The same reading keeps the forwarder retrying its
    outcomes whole, where it would try each alone and drop every one."""
    engine = create_engine(postgres_server.new_database(), 5)
    try:
        await upgrade_schema(engine)
        async with engine.connect() as connection:
            name = await connection.scalar(sa.text("SELECT current_database()"))
            await connection.execute(
                sa.text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            )
            await connection.commit()
        with capture_logs() as logs:
            async with EventWriter(engine, destinations=[destination()]) as writer:
                results = await asyncio.gather(
                    *(writer.submit(submission(make_event())) for _ in range(4)),
                    return_exceptions=True,
                )
        assert [type(result) for result in results] == [StoreUnavailableError] * 4
        failed = [line["batch_size"] for line in logs if line["event"] == "store_failed"]
        assert failed == [4]
    finally:
        await engine.dispose()
