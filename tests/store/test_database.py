"""Migrations build exactly the schema the code declares, and can be walked back; an
absent database is a 503 for operators' transactions."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from receiver.exceptions import StoreUnavailableError
from receiver.store.database import _is_current, alembic_config, create_engine, transaction
from receiver.store.tables import metadata
from tests.databases import PostgresServer, sync_url


def test_migrations_match_the_declared_tables_and_walk_back(
    tmp_path: Path, new_database: Callable[[Path], str]
) -> None:
    engine = sa.create_engine(sync_url(new_database(tmp_path)))
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
        command.downgrade(config, "base")
        assert sa.inspect(connection).get_table_names() == ["alembic_version"]
        command.upgrade(config, "head")
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    engine.dispose()


def test_schema_is_current_at_our_head_or_past_it_never_behind(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        assert not _is_current(connection)  # no schema at all
        command.upgrade(config, "head")
        assert _is_current(connection)
        command.downgrade(config, "-1")
        assert not _is_current(connection)  # behind this code
        command.upgrade(config, "head")
        # A later release's migration, unknown to this code, has run: still usable.
        connection.execute(sa.text("UPDATE alembic_version SET version_num = 'from_the_future'"))
        assert _is_current(connection)
    engine.dispose()


def test_deliveries_of_the_previous_version_become_the_default_destinations(
    tmp_path: Path, new_database: Callable[[Path], str]
) -> None:
    """0005 on a database the previous version filled, and back: a downgrade keeps the
    default destination's deliveries and drops the others' (it knows one downstream)."""
    engine = sa.create_engine(sync_url(new_database(tmp_path)))
    now = datetime.now(UTC)
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
        connection.execute(
            sa.text(
                "INSERT INTO events (id, webhook_id, received_at, outcome, body)"
                " VALUES ('evt_1', 'evt_1', :now, 'applied', :body)"
            ),
            {"now": now, "body": b"{}"},
        )
        insert = sa.text(
            "INSERT INTO deliveries (event_id, state, attempts, next_attempt_at, created_at)"
            " VALUES ('evt_1', :state, 1, :now, :now)"
        )
        connection.execute(insert, {"state": "pending", "now": now})
        connection.execute(insert, {"state": "delivered", "now": now})
        command.upgrade(config, "head")
        rows = connection.execute(sa.text("SELECT destination, state FROM deliveries ORDER BY id"))
        assert rows.all() == [("default", "pending"), ("default", "delivered")]
        connection.execute(
            sa.text(
                "INSERT INTO deliveries (event_id, destination, state, attempts,"
                " next_attempt_at, created_at)"
                " VALUES ('evt_1', 'billing', 'pending', 0, :now, :now)"
            ),
            {"now": now},
        )
        command.downgrade(config, "0004")
        assert connection.execute(sa.text("SELECT count(*) FROM deliveries")).scalar() == 2
        assert "destination_health" not in sa.inspect(connection).get_table_names()
        command.upgrade(config, "head")
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    engine.dispose()


def test_records_of_the_previous_version_keep_their_data_and_registered_tasks_walk_back(
    tmp_path: Path, new_database: Callable[[Path], str]
) -> None:
    """0006 on a database 0005 filled: records keep every value and gain empty registration
    columns; a downgrade removes the registered tasks Rivya has not reported on (the
    previous version cannot hold a record without a generation) and keeps the others."""
    engine = sa.create_engine(sync_url(new_database(tmp_path)))
    now = datetime.now(UTC)
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
        connection.execute(
            sa.text(
                "INSERT INTO records (task_id, status, result_urls, updated_at, last_event_id,"
                " changed_at) VALUES ('task_old', 'succeeded', '[]', :now, 'evt_1', :now)"
            ),
            {"now": now},
        )
        command.upgrade(config, "head")
        row = connection.execute(
            sa.text(
                "SELECT status, last_event_id, reference, registered_at, reconcile_state"
                " FROM records"
            )
        ).one()
        assert tuple(row) == ("succeeded", "evt_1", None, None, None)
        connection.execute(
            sa.text(
                "INSERT INTO records (task_id, status, result_urls, changed_at, registered_at)"
                " VALUES ('task_new', 'queued', '[]', :now, :now)"
            ),
            {"now": now},
        )
        command.downgrade(config, "0005")
        assert connection.execute(sa.text("SELECT task_id FROM records")).scalars().all() == [
            "task_old"
        ]
        command.upgrade(config, "head")
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    engine.dispose()


def test_0008_adds_the_partial_filter_indexes_and_walks_back(
    tmp_path: Path, new_database: Callable[[Path], str]
) -> None:
    """Each index holds only the rows a filter finds among many (its WHERE is kept on both
    backends, which compare_metadata does not check); a downgrade removes exactly them."""
    engine = sa.create_engine(sync_url(new_database(tmp_path)))
    partial = {
        "ix_events_type_received_at": "generation.succeeded",
        "ix_events_outcome_received_at": "applied",
        "ix_deliveries_dead": "dead",
    }
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0007")
        assert not set(partial) & _index_definitions(connection).keys()
        command.upgrade(config, "0008")
        definitions = _index_definitions(connection)
        for name, value in partial.items():
            assert "WHERE" in definitions[name].upper(), name
            assert value in definitions[name], name
        command.downgrade(config, "0007")
        assert not set(partial) & _index_definitions(connection).keys()
        command.upgrade(config, "head")
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    engine.dispose()


def test_0009_adds_the_dead_letters_by_destination_index_and_walks_back(
    tmp_path: Path, new_database: Callable[[Path], str]
) -> None:
    """Only dead deliveries are in it (its WHERE kept on both backends); a downgrade removes
    it alone."""
    engine = sa.create_engine(sync_url(new_database(tmp_path)))
    name = "ix_deliveries_dead_destination"
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0008")
        before = _index_definitions(connection)
        assert name not in before
        command.upgrade(config, "0009")
        definition = _index_definitions(connection)[name]
        assert "WHERE" in definition.upper()
        assert "dead" in definition
        command.downgrade(config, "0008")
        assert _index_definitions(connection) == before
        command.upgrade(config, "head")
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    engine.dispose()


def test_0010_settles_stored_dead_letters_by_their_pairs_and_walks_back(
    tmp_path: Path, new_database: Callable[[Path], str]
) -> None:
    """Stored before 0010: a dead letter later delivered (same event, destination and
    target URL) becomes recovered, with the replay that died between; one replayed and still
    dead keeps only its latest dead; a dead letter whose pair differs by destination or
    target URL (NULL against a URL) stays dead. A delivery that finished before its pair's
    dead letter died recovers nothing: that letter stays dead, or (with a newer delivery of
    its pair) is replayed, as the service settles them. A downgrade makes them all dead
    again."""
    engine = sa.create_engine(sync_url(new_database(tmp_path)))
    now = datetime.now(UTC)
    rows = [
        ("evt_1", "billing", None, "dead"),
        ("evt_1", "billing", None, "dead"),
        ("evt_1", "billing", None, "delivered"),
        ("evt_1", "product", None, "dead"),
        ("evt_1", "billing", "https://other.example/hook", "dead"),
        ("evt_2", "billing", None, "dead"),
        ("evt_2", "billing", None, "dead"),
        ("evt_2", "product", "https://other.example/hook", "delivered"),
        ("evt_2", "product", None, "dead"),
        ("evt_3", "billing", None, "delivered"),
        ("evt_3", "billing", None, "dead"),
        ("evt_4", "billing", None, "dead"),
        ("evt_4", "billing", None, "delivered"),
    ]
    # When each finished, by row, in minutes: evt_4's delivery before its dead letter died.
    finished = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 11]
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0009")
        for event_id in ("evt_1", "evt_2", "evt_3", "evt_4"):
            connection.execute(
                sa.text(
                    "INSERT INTO events (id, webhook_id, received_at, outcome, body)"
                    " VALUES (:id, :id, :now, 'applied', :body)"
                ),
                {"id": event_id, "now": now, "body": b"{}"},
            )
        for (event_id, destination, target_url, state), minutes in zip(rows, finished, strict=True):
            connection.execute(
                sa.text(
                    "INSERT INTO deliveries (event_id, destination, target_url, state,"
                    " attempts, next_attempt_at, created_at, finished_at)"
                    " VALUES (:event_id, :destination, :target_url, :state, 1, :now, :now,"
                    " :finished_at)"
                ),
                {
                    "event_id": event_id,
                    "destination": destination,
                    "target_url": target_url,
                    "state": state,
                    "now": now,
                    "finished_at": now + timedelta(minutes=minutes),
                },
            )
        states = sa.text("SELECT state FROM deliveries ORDER BY id")
        command.upgrade(config, "0010")
        assert list(connection.scalars(states)) == [
            "recovered",
            "recovered",
            "delivered",
            "dead",
            "dead",
            "replayed",
            "dead",
            "delivered",
            "dead",
            "delivered",
            "dead",
            "replayed",
            "delivered",
        ]
        command.downgrade(config, "0009")
        assert list(connection.scalars(states)) == [state for *_, state in rows]
        command.upgrade(config, "head")
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    engine.dispose()


@pytest.mark.anyio
async def test_0011_walks_back_with_traced_rows_through_the_services_own_engine(
    tmp_path: Path, new_database: Callable[[Path], str]
) -> None:
    """Through create_engine (SQLite with its foreign keys on, as the service runs it):
    events with deliveries, both with trace context, keep every row through a downgrade to
    0010 and the upgrade back. Batch mode's copy of `events` was refused by the deliveries'
    foreign key."""
    engine = create_engine(new_database(tmp_path), 10)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ids = sa.text("SELECT e.id, d.id FROM events e JOIN deliveries d ON d.event_id = e.id")

    def walk(connection: sa.Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        now = datetime.now(UTC)
        connection.execute(
            sa.text(
                "INSERT INTO events (id, webhook_id, received_at, outcome, body, traceparent,"
                " tracestate) VALUES ('evt_1', 'evt_1', :now, 'applied', :body, :tp, 'k=v')"
            ),
            {"now": now, "body": b"{}", "tp": traceparent},
        )
        connection.execute(
            sa.text(
                "INSERT INTO deliveries (event_id, destination, state, attempts,"
                " next_attempt_at, created_at, traceparent)"
                " VALUES ('evt_1', 'default', 'pending', 0, :now, :now, :tp)"
            ),
            {"now": now, "tp": traceparent},
        )
        before = connection.execute(ids).all()
        command.downgrade(config, "0010")
        for table in ("events", "deliveries"):
            columns = {column["name"] for column in sa.inspect(connection).get_columns(table)}
            assert not columns & {"traceparent", "tracestate"}
        assert connection.execute(ids).all() == before
        command.upgrade(config, "head")
        assert connection.execute(ids).all() == before
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []

    try:
        async with engine.begin() as connection:
            await connection.run_sync(walk)
    finally:
        await engine.dispose()


def _index_definitions(connection: sa.Connection) -> dict[str, str]:
    if connection.dialect.name == "postgresql":
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
    else:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    return {str(name): str(sql) for name, sql in connection.execute(sa.text(query))}


@pytest.mark.anyio
async def test_a_pool_with_no_connection_to_give_is_a_503(
    tmp_path: Path, new_database: Callable[[Path], str]
) -> None:
    """The pool's timeout says the database is not there for now, like a lost connection:
    an operator's request is answered 503, not 500."""
    engine = create_async_engine(
        new_database(tmp_path), pool_size=1, max_overflow=0, pool_timeout=0.1
    )
    try:
        async with engine.connect() as held:
            await held.execute(sa.text("SELECT 1"))
            with pytest.raises(StoreUnavailableError):
                async with transaction(engine) as connection:
                    await connection.execute(sa.text("SELECT 1"))
    finally:
        await engine.dispose()


@pytest.mark.anyio
async def test_a_database_that_does_not_exist_is_a_503(postgres_server: PostgresServer) -> None:
    """PostgreSQL refusing the connection (no such database) is the database's absence."""
    database_url = postgres_server.new_database().rpartition("/")[0] + "/receiver_missing"
    engine = create_engine(database_url, 5)
    try:
        with pytest.raises(StoreUnavailableError):
            async with transaction(engine) as connection:
                await connection.execute(sa.text("SELECT 1"))
    finally:
        await engine.dispose()
