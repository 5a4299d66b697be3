from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.store.database import create_engine, upgrade_schema


@pytest.fixture
async def engine(tmp_path: Path, new_database: Callable[[Path], str]) -> AsyncIterator[AsyncEngine]:
    """A new database of the test's backend, at the latest schema, empty."""
    engine = create_engine(new_database(tmp_path), 10)
    await upgrade_schema(engine)
    yield engine
    await engine.dispose()
