"""The writer when the database goes away while it retries a batch one event at a time."""

import asyncio
from typing import Any, cast

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.exceptions import StoreUnavailableError
from receiver.store import writer as writer_module
from receiver.store.connections import Transaction
from receiver.store.writer import EventWriter
from tests.helpers import destination, make_event
from tests.store.test_writer import submission

pytestmark = pytest.mark.anyio


class FailingInTurn:
    """A write connection whose transactions fail with each of `errors` in turn."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.transactions = 0

    async def transact(self, work: Transaction[Any]) -> Any:
        self.transactions += 1
        raise self.errors[min(self.transactions, len(self.errors)) - 1]

    async def close(self) -> None:
        pass


async def test_the_database_lost_while_retrying_alone_fails_the_rest_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch fails for one event's sake, then the database goes (a server that stopped
    answering: each try waits the busy timeout): the rest of the batch is a 503 at once,
    not one more transaction, and one more timeout, per event."""
    connection = FailingInTurn(
        sa_exc.IntegrityError("INSERT ...", None, Exception("one event's fault")),
        TimeoutError("the server stopped answering"),
    )
    monkeypatch.setattr(writer_module, "open_write_connection", lambda *_: connection)
    async with EventWriter(cast(AsyncEngine, None), destinations=[destination()]) as writer:
        results = await asyncio.gather(
            *(writer.submit(submission(make_event())) for _ in range(8)),
            return_exceptions=True,
        )
    assert [type(result) for result in results] == [StoreUnavailableError] * 8
    assert connection.transactions == 2
