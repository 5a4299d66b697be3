"""The admin API's lock, and its lookups' answers for absent things."""

import json
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from receiver.operators.admin import MAX_REPROCESS_IDS
from tests.conftest import ADMIN_TOKEN, Rivya
from tests.databases import reading
from tests.helpers import HTTP, ReceiverProcess, make_event, wait_until


@pytest.mark.parametrize(
    "authorization",
    [None, "", f"Bearer {ADMIN_TOKEN}x", f"bearer {ADMIN_TOKEN}", ADMIN_TOKEN, "Bearer x"],
)
def test_admin_without_the_exact_bearer_token_is_401(
    rivya: Rivya, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    response = HTTP.get(f"{rivya.server.url}/admin/events/evt_x", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"] == "unauthorized"


def test_admin_is_closed_to_everyone_when_no_token_is_set(
    start_server: Callable[..., ReceiverProcess],
) -> None:
    process = start_server(admin_token="")
    for token in (ADMIN_TOKEN, "None", "null"):
        response = HTTP.get(
            f"{process.url}/admin/records/task_x", headers={"authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401


def test_unknown_event_and_record_are_404(rivya: Rivya) -> None:
    assert rivya.admin("/events/evt_unknown").status_code == 404
    assert rivya.admin("/records/task_unknown").json() == {
        "error": "not_found",
        "detail": "no record 'task_unknown'",
    }


def test_admin_event_shows_what_was_stored(rivya: Rivya) -> None:
    event = make_event("generation.failed")
    rivya.send(event)
    shown = rivya.admin(f"/events/{event['id']}").json()
    assert {"id", "type", "received_at", "outcome", "payload", "deliveries"} <= shown.keys()
    assert shown["task_id"] == event["data"]["id"]
    assert "body" not in shown


def test_unknown_route_and_wrong_method_answer_json(rivya: Rivya) -> None:
    missing = HTTP.get(f"{rivya.server.url}/nowhere")
    assert (missing.status_code, missing.json()["error"]) == (404, "http_error")
    wrong = HTTP.get(f"{rivya.server.url}/webhooks/rivya")
    assert wrong.status_code == 405


def test_admin_events_filter_and_page_with_a_cursor(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya
) -> None:
    sender = Rivya(start_server(), rivya.secret, rivya.sensitive)
    failed = [make_event("generation.failed") for _ in range(3)]
    for event in [*failed, make_event()]:
        sender.send(event)

    seen, query = [], "/events?type=generation.failed&limit=2"
    while True:
        page = sender.admin(query).json()
        seen += [e["id"] for e in page["events"]]
        if page["next_cursor"] is None:
            break
        query = f"/events?type=generation.failed&limit=2&cursor={page['next_cursor']}"
    assert seen == [e["id"] for e in reversed(failed)]
    assert sender.admin("/events?outcome=applied&since=2999-01-01T00:00:00Z").json() == {
        "events": [],
        "next_cursor": None,
    }


@pytest.mark.parametrize(
    "query",
    [
        "/events?cursor=garbage",
        "/events?limit=0",
        "/events?outcome=lost",
        "/events?since=yesterday",
        "/events?colour=blue",
        "/deliveries?state=lost",
        "/stats?since=2026-01-01T00:00:00",
    ],
)
def test_admin_listings_refuse_bad_queries_with_400(rivya: Rivya, query: str) -> None:
    response = rivya.admin(query)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_admin_replay_is_audited(rivya: Rivya) -> None:
    event = make_event()
    rivya.send(event)
    assert rivya.admin(f"/events/{event['id']}/replay", method="POST").status_code == 202
    wait_until(lambda: '"what":"replay"' in rivya.server.output(), timeout=5)
    audits = [json.loads(line) for line in rivya.server.output().splitlines() if '"audit"' in line]
    assert {"who": "admin-api", "what": "replay", "count": 1}.items() <= audits[-1].items()


def test_admin_reprocess_counts_events_that_changed_outcome_and_those_that_did_not(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya
) -> None:
    sender = Rivya(start_server(), rivya.secret, rivya.sensitive)
    event = make_event()
    sender.send(event)
    # As if an older release had quarantined it.
    with reading(sender.server.env["RECEIVER_DATABASE_URL"]) as db:
        db.execute(sa.text("UPDATE events SET outcome = 'quarantined', quarantine_reason = 'old'"))
        db.commit()
    first = sender.admin("/reprocess", "POST", json={"quarantined": True})
    assert (first.status_code, first.json()) == (
        200,
        {"reprocessed": 1, "changed": 1, "unchanged": 0, "gone": 0, "outcomes": {"applied": 1}},
    )
    again = sender.admin("/reprocess", "POST", json={"event_ids": [event["id"]]}).json()
    assert (again["changed"], again["unchanged"]) == (0, 1)
    missing = sender.admin("/reprocess", "POST", json={"event_ids": [event["id"], "evt_nowhere"]})
    assert (missing.status_code, missing.json()["detail"]) == (404, "no event 'evt_nowhere'")
    refusals: list[dict[str, object]] = [
        {},
        {"quarantined": False},
        {"event_ids": [event["id"]], "quarantined": True},
        {"event_ids": []},
        {"event_ids": ["evt\x00"]},
        {"event_ids": ["evt"] * (MAX_REPROCESS_IDS + 1)},
    ]
    for bad in refusals:
        refused = sender.admin("/reprocess", "POST", json=bad)
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_request"), bad
    audits = [json.loads(line) for line in sender.server.output().splitlines() if '"audit"' in line]
    assert [
        (a["what"], a["count"], a["changed"], a["unchanged"])
        for a in audits
        if a["who"] == "admin-api"
    ] == [
        ("reprocess", 1, 1, 0),
        ("reprocess", 1, 0, 1),
    ]


def test_admin_deliveries_refuse_an_unknown_destination_as_the_cli_does(rivya: Rivya) -> None:
    """`/admin/deliveries?destination=nope` is a 400 in `deliveries list`'s own words (it was
    an empty list); a configured destination is listed."""
    refused = rivya.admin("/deliveries?destination=nope")
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "invalid_request",
        "detail": "destination: 'nope' is not configured",
    }
    assert rivya.admin("/deliveries?destination=default").status_code == 200
