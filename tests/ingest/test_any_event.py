"""Parsing is total, through the real handler, on each backend: an authentic event is
stored (applied, or quarantined with a reason) whatever its fields hold."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.logs import configure_logging
from receiver.settings import Settings
from receiver.signatures import WebhookSecret, sign_headers
from tests.conftest import SECRETS_OF_THE_RUN, Sensitive
from tests.databases import reading
from tests.envelopes import body_of, envelopes
from tests.reliability.test_fuzz import InProcess

# Each example is a request and a read of the database: bounded so that both backends take
# well under a minute together.
EXAMPLES = 150
SECRET = WebhookSecret.generate()


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory,
    new_database: Callable[[Path], str],
    sensitive: Sensitive,
) -> Iterator[tuple[InProcess, str]]:
    """The real app in-process (lifespan entered: migrations, writer) on a fresh database."""
    folder = tmp_path_factory.mktemp("any-event")
    for registry in (sensitive, SECRETS_OF_THE_RUN):
        registry.add(SECRET.reveal(), SECRET.reveal().removeprefix("whsec_"))
    database_url = new_database(folder)
    settings = Settings.from_environment(
        {"RECEIVER_DATABASE_URL": database_url, "RECEIVER_SIGNING_SECRETS": SECRET.reveal()},
        env_file=None,
    )
    with (folder / "in-process.log").open("w") as log:
        configure_logging("info", "json", stream=log)
        running = InProcess(settings)
        yield running, database_url
        running.close()
        structlog.reset_defaults()
    assert sensitive.found_in((folder / "in-process.log").read_text()) == []


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=envelopes(), msg_id=st.from_regex(r"\Amsg_[a-z0-9]{1,20}\Z"))
def test_every_authentic_event_is_stored_whatever_its_fields_hold(
    app: tuple[InProcess, str], event: dict[str, Any], msg_id: str
) -> None:
    running, database_url = app
    body = body_of(event)
    response = running.post(
        body, {"content-type": "application/json"} | sign_headers([SECRET], msg_id, body)
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] in ("accepted", "quarantined", "duplicate")
    with reading(database_url) as db:
        stored = db.execute(
            sa.text("SELECT outcome, quarantine_reason, body FROM events WHERE id = :id"),
            {"id": answer["event_id"]},
        ).one()
    if answer["status"] == "duplicate":
        return
    assert (stored.outcome == "quarantined") == (answer["status"] == "quarantined")
    assert (stored.quarantine_reason is not None) == (stored.outcome == "quarantined")
    assert bytes(stored.body) == body
