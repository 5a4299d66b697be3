"""A NUL character in a URL, in its path or in any query parameter of any admin route (as
docs/openapi.json lists them) or console page: a 400 that names the URL, on both backends
(on PostgreSQL, which refuses NUL in any text, each was a 500)."""

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from pydantic import ValidationError

from receiver.console.pages import EventsQuery
from receiver.operators.admin import ReplayRequest
from receiver.urls import refuse_nul
from tests.conftest import Rivya
from tests.console.conftest import Browser
from tests.helpers import HTTP, ReceiverProcess, make_event

DOCUMENT = json.loads((Path(__file__).parents[1] / "docs" / "openapi.json").read_text())
PARAMETERS = DOCUMENT["components"]["parameters"]


def admin_urls_with_a_nul() -> list[str]:
    """Each GET under /admin once per parameter, that parameter holding a NUL."""
    urls = []
    for path, operations in DOCUMENT["paths"].items():
        if "get" not in operations or not path.startswith("/admin/"):
            continue
        declared = [
            PARAMETERS[p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
            for p in operations["get"].get("parameters", [])
        ]
        in_path = {p["name"]: "a\x00b" for p in declared if p["in"] == "path"}
        plain = path.format(**dict.fromkeys(in_path, "x"))
        if in_path:
            urls.append(path.format(**{k: quote(v, safe="") for k, v in in_path.items()}))
        urls += [f"{plain}?{p['name']}=%00" for p in declared if p["in"] == "query"]
    return urls


CONSOLE_URLS = [
    "/console/events?type=%00",
    "/console/failed?q=a%00b",
    "/console/records?q=%00",
    "/console/deliveries?destination=%00",
    "/console/replay?type=%00",
    "/console/events/%00",
    "/console/records/a%00",
]


@pytest.mark.parametrize("url", admin_urls_with_a_nul())
def test_a_nul_in_an_admin_url_is_400(rivya: Rivya, url: str) -> None:
    answer = rivya.admin(url.removeprefix("/admin"))
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": "invalid_request", "detail": "the URL holds a NUL character"}


def test_a_nul_in_a_console_url_is_400(rivya: Rivya) -> None:
    browser = Browser(rivya.server.url)
    try:
        assert browser.sign_in().status_code == 303
        for url in CONSOLE_URLS:
            assert browser.client.get(url).status_code == 400, url
    finally:
        browser.client.close()


def test_without_the_console_its_addresses_get_the_json_refusal(
    start_server: Callable[..., ReceiverProcess],
) -> None:
    """The check outside the console leaves the console's paths to its guard only while
    there is a console to answer them."""
    server = start_server(console="false")
    answer = HTTP.get(f"{server.url}/console/events?type=a%00b")
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_request", "detail": "the URL holds a NUL character"}


def test_the_webhook_endpoint_refuses_a_nul_in_its_url_too(rivya: Rivya) -> None:
    answer = HTTP.post(f"{rivya.server.url}/webhooks/rivya?x=%00", content=b"{}")
    assert answer.status_code == 400


@pytest.mark.parametrize("event_id", ["evt/a/b", "..", "evt/replay"])
def test_an_id_with_a_slash_or_dots_is_one_segment_of_an_admin_url(
    rivya: Rivya, event_id: str
) -> None:
    """IDs are Rivya's, so any text: its event and record are found, and it is replayed,
    with the ID sent as one segment (slashes and dots encoded). (A slash was a 404.)"""
    task_id = f"task/{event_id}"
    assert rivya.send(make_event(event_id=event_id, task_id=task_id)).status_code == 200
    segment = quote(event_id, safe="").replace(".", "%2E")
    assert rivya.admin(f"/events/{segment}").json()["id"] == event_id
    assert rivya.admin(f"/records/{quote(task_id, safe='')}").json()["task_id"] == task_id
    replayed = rivya.admin(f"/events/{segment}/replay", "POST")
    assert (replayed.status_code, replayed.json()["deliveries"]) == (202, 1)


def test_console_filters_and_admin_bodies_refuse_a_nul_through_one_validator() -> None:
    """A console filter and an admin JSON body read with the same validator, `refuse_nul`:
    a NUL anywhere in a text is invalid, any other text passes as it is."""
    assert refuse_nul("a/b ..") == "a/b .."
    assert refuse_nul(3) == 3
    with pytest.raises(ValueError, match="NUL"):
        refuse_nul("a\x00b")
    for model in (EventsQuery, ReplayRequest):
        assert model.model_validate({"type": "a.b"}).type == "a.b"
        with pytest.raises(ValidationError, match="NUL"):
            model.model_validate({"type": "a\x00b"})
