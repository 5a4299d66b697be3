"""The console's actions, route by route (receiver/console/mount.py lists them): each refuses
no session, a missing or wrong CSRF token and the support role, and then changes nothing;
each answers 404 for what does not exist and 409 for what cannot be done; and reprocessing
is seen by its effect on the database, not by its audit line."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from tests.conftest import Rivya, Sensitive
from tests.console.conftest import SUPPORT_TOKEN, Browser
from tests.databases import reading
from tests.fake_rivya import FakeRivya
from tests.helpers import Downstream, ReceiverProcess, make_event, wait_until
from tests.reconcile.conftest import reconciling

# An action's audit line (signing in writes one of its own).
ACTED = re.compile(r'"who":"console","what":"(?:replay|reprocess|reconcile)"')


@dataclass
class Console:
    rivya: Rivya
    api: FakeRivya
    event: dict[str, Any]
    browser: Callable[[], Browser]

    def admin(self) -> Browser:
        browser = self.browser()
        assert browser.sign_in().status_code == 303
        return browser

    def state(self) -> tuple[Any, ...]:
        """What any action would change: deliveries, outcomes, records asked, audit lines."""
        with reading(self.rivya.server.env["RECEIVER_DATABASE_URL"]) as db:
            rows = db.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM deliveries), "
                    "(SELECT count(*) FROM events WHERE outcome = 'quarantined'), "
                    "(SELECT count(*) FROM records WHERE reconciled_at IS NOT NULL)"
                )
            ).one()
        audits = len(ACTED.findall(self.rivya.server.output()))
        return (*rows, len(self.api.calls_to("/api/v1/generations")), audits)


@pytest.fixture
def console(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    fake_rivya: FakeRivya,
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    browsers: list[Browser],
) -> Console:
    server = start_server(
        support_token=SUPPORT_TOKEN,
        forward_url=own_downstream().url,
        **reconciling(fake_rivya, reconcile_after_seconds="3600"),
    )
    rivya = Rivya(server, secrets_in_use[0], sensitive)
    event = make_event()
    fake_rivya.generations[event["data"]["id"]] = event["data"]
    assert rivya.send(event).json()["status"] == "accepted"
    wait_until(lambda: rivya.admin(f"/events/{event['id']}").json()["deliveries"], timeout=10)
    # A quarantined event too, so that a reprocess has something to change.
    assert rivya.send(make_event(data={"id": "task_q", "status": "??"})).json()["status"] == (
        "quarantined"
    )

    def browser() -> Browser:
        browsers.append(Browser(server.url))
        return browsers[-1]

    return Console(rivya, fake_rivya, event, browser)


def actions(event: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Every action route, with the form fields a valid request of it carries (an ID in a
    field is encoded as one path segment, as the pages write it)."""
    return {
        "/console/events/replay": {"event_id": quote(event["id"], safe="")},
        "/console/replay": {"type": event["type"]},
        "/console/reprocess": {},
        "/console/destinations/default/replay": {},
        "/console/records/reconcile": {"task_id": quote(event["data"]["id"], safe="")},
    }


def test_every_action_refuses_no_session_a_bad_csrf_token_and_support_and_changes_nothing(
    console: Console,
) -> None:
    anonymous, admin, support = console.browser(), console.admin(), console.browser()
    assert support.sign_in(SUPPORT_TOKEN).status_code == 303
    before = console.state()
    for path, fields in actions(console.event).items():
        refusals = {
            "no session": anonymous.post(path, csrf=anonymous.csrf("/console/login"), **fields),
            "no csrf": admin.post(path, note="a form without the token", **fields),
            "wrong csrf": admin.post(path, csrf="not-the-token", **fields),
            "support's csrf": admin.post(path, csrf=support.csrf(), **fields),
            "support": support.post(path, csrf=support.csrf(), **fields),
        }
        assert {why: r.status_code for why, r in refusals.items()} == dict.fromkeys(
            refusals, 403
        ), path
    assert console.state() == before, "a refused action changed something"

    # The same requests, from the administrator with the form's own token, do act.
    for path, fields in actions(console.event).items():
        done = admin.post(path, csrf=admin.csrf(), **fields)
        assert (done.status_code, "done=" in done.headers["location"]) == (303, True), path
    deliveries, quarantined, reconciled, asked, audits = console.state()
    assert deliveries > before[0]
    assert quarantined == before[1]  # its status is still unknown: quarantined anew
    assert (reconciled, asked, audits) == (before[2] + 1, before[3] + 1, before[4] + 5)


def test_actions_on_what_does_not_exist_answer_404_and_change_nothing(
    console: Console,
) -> None:
    admin = console.admin()
    before = console.state()
    for path, field in (
        ("/console/events/replay", "event_id"),
        ("/console/records/reconcile", "task_id"),
    ):
        for unknown in ("nowhere", "a/b", "..", "%2E%2E", "a%00b"):
            asked = admin.post(path, csrf=admin.csrf(), **{field: quote(unknown, safe="")})
            assert asked.status_code == 404, (path, unknown)
    assert console.state() == before


def test_actions_that_cannot_be_done_answer_409_and_change_nothing(
    console: Console,
    start_server: Callable[..., ReceiverProcess],
    browsers: list[Browser],
) -> None:
    admin = console.admin()
    event = console.event
    before = console.state()
    to_nowhere = {"csrf": admin.csrf(), "destination": "nowhere"}
    replay_it = actions(event)["/console/events/replay"]
    assert admin.post("/console/events/replay", **to_nowhere, **replay_it).status_code == 409
    assert admin.post("/console/replay", **to_nowhere).status_code == 409
    assert console.state() == before

    # A server with no downstream and no Rivya API key: nothing to replay to, no one to ask.
    bare = start_server(forward_url="", rivya_api_key="")
    browsers.append(Browser(bare.url))
    other = browsers[-1]
    assert other.sign_in().status_code == 303
    Rivya(bare, console.rivya.secret, console.rivya.sensitive).send(event)
    for path, fields in actions(event).items():
        if path != "/console/reprocess":  # needs neither
            assert other.post(path, csrf=other.csrf(), **fields).status_code == 409, path
    assert ACTED.findall(bare.output()) == []


def test_console_reprocess_applies_a_quarantined_event_in_the_database(
    console: Console,
) -> None:
    """Seen in the database: the event's outcome and its record, not the audit line."""
    event, url = console.event, console.rivya.server.env["RECEIVER_DATABASE_URL"]
    # As if an older release had quarantined it and never written its record.
    with reading(url) as db:
        db.execute(
            sa.text("UPDATE events SET outcome = 'quarantined', quarantine_reason = 'old' "
                    "WHERE id = :id"),
            {"id": event["id"]},
        )  # fmt: skip
        db.execute(sa.text("DELETE FROM records WHERE task_id = :id"), {"id": event["data"]["id"]})
        db.commit()
    admin = console.admin()
    done = admin.post("/console/reprocess", csrf=admin.csrf())
    assert done.headers["location"].startswith(
        "/console/events?done=reprocessed&changed=1&became=applied%3A1&became=quarantined%3A1"
        "&signed="
    )
    with reading(url) as db:
        outcome = db.execute(
            sa.text("SELECT outcome, quarantine_reason FROM events WHERE id = :id"),
            {"id": event["id"]},
        ).one()
        record = db.execute(
            sa.text("SELECT status, last_event_id FROM records WHERE task_id = :id"),
            {"id": event["data"]["id"]},
        ).one()
    assert tuple(outcome) == ("applied", None)
    assert tuple(record) == ("succeeded", event["id"])
