"""The admin API's lock, and its lookups' answers for absent things."""

from collections.abc import Callable

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, Rivya
from tests.helpers import ReceiverProcess, make_event


@pytest.mark.parametrize(
    "authorization",
    [None, "", f"Bearer {ADMIN_TOKEN}x", f"bearer {ADMIN_TOKEN}", ADMIN_TOKEN, "Bearer x"],
)
def test_admin_without_the_exact_bearer_token_is_401(
    rivya: Rivya, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    response = httpx.get(f"{rivya.server.url}/admin/events/evt_x", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"] == "unauthorized"


def test_admin_is_closed_to_everyone_when_no_token_is_set(
    start_server: Callable[..., ReceiverProcess],
) -> None:
    process = start_server(admin_token="")
    for token in (ADMIN_TOKEN, "None", "null"):
        response = httpx.get(
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
    missing = httpx.get(f"{rivya.server.url}/nowhere")
    assert (missing.status_code, missing.json()["error"]) == (404, "http_error")
    wrong = httpx.get(f"{rivya.server.url}/webhooks/rivya")
    assert wrong.status_code == 405
