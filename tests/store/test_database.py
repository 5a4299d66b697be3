"""Migrations build exactly the schema the code declares, and can be walked back."""

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from receiver.store.database import _is_current, alembic_config
from receiver.store.tables import metadata
from tests.databases import sync_url


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
