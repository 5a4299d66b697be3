"""Every console error is a page inside the layout, against a real server: the status, the
navigation of the signed-in role, the failure's own sentence (a bad filter names its field
and what it accepts), a way back, and the console's headers; signed out, the same page with
no navigation. /admin and the webhook keep answering JSON. And actions that cannot work
(no Rivya API key; the support role) are not offered."""

import html
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa

from receiver.console.errors import WORDS
from receiver.store.database import sqlite_path
from tests.conftest import ADMIN_TOKEN, Rivya, Sensitive
from tests.console.conftest import SUPPORT_TOKEN, Browser
from tests.console.test_pages import assert_headers
from tests.databases import reading
from tests.fake_rivya import FakeRivya
from tests.helpers import HTTP, ReceiverProcess, make_event, wait_until
from tests.reconcile.conftest import reconciling

PROBLEM = re.compile(r'<p class="problem" role="alert">(.*?)</p>', re.S)
NAVIGATION = '<a href="/console/deliveries">Deliveries</a>'
# What offers an action: a form that posts (but sign-out's), a link to an action's confirmation.
OFFERED = re.compile(
    r'method="post" action="/console/(?!logout")|href="/console/(?:replay|reprocess)\b'
    r'|href="/console/destinations/[^"]*/replay'
)
# Short, so that a form sent too slowly is refused soon (408).
REQUEST_TIMEOUT_SECONDS = 2
# Past the console's form cap (receiver.bodies.SMALL_BODY_BYTES, 64 KiB).
OVERSIZED = "x" * (64 * 1024 + 1)
# The text of a failure nobody foresaw, which no page may show.
REFUSED = "refused by a test trigger"
# A trigger refusing sign-out's delete: the database failing a write for a reason the
# service cannot name (a constraint, a bug), through its real parts, on each backend.
REFUSE_SIGN_OUT = {
    "sqlite": [
        "CREATE TRIGGER refuse_sign_out BEFORE DELETE ON console_sessions"
        f" BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_sign_out() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" RAISE EXCEPTION '{REFUSED}'; END $$",
        "CREATE TRIGGER refuse_sign_out BEFORE DELETE ON console_sessions FOR EACH ROW"
        " EXECUTE FUNCTION refuse_sign_out()",
    ],
}


@dataclass
class Console:
    rivya: Rivya
    event: dict[str, Any]
    admin: Browser
    support: Browser
    anonymous: Browser


@pytest.fixture(scope="module")
def console(
    workdir: Path, server_env: dict[str, str], secrets_in_use: tuple[str, str], sensitive: Sensitive
) -> Iterator[Console]:
    """A server with a support token and no Rivya API key, one event delivered, and a
    browser signed in per role (and one signed out)."""
    env = {
        **server_env,
        "RECEIVER_SUPPORT_TOKEN": SUPPORT_TOKEN,
        "RECEIVER_REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT_SECONDS),
    }
    server = ReceiverProcess(workdir, env)
    server.start()
    rivya = Rivya(server, secrets_in_use[0], sensitive)
    event = make_event()
    assert rivya.send(event).json()["status"] == "accepted"
    wait_until(lambda: rivya.admin(f"/events/{event['id']}").json()["deliveries"], timeout=10)
    admin, support, anonymous = (Browser(server.url) for _ in range(3))
    assert admin.sign_in().status_code == 303
    assert support.sign_in(SUPPORT_TOKEN).status_code == 303
    yield Console(rivya, event, admin, support, anonymous)
    for browser in (admin, support, anonymous):
        browser.client.close()
    server.stop()
    assert sensitive.found_in(server.output()) == [], "a sensitive value reached the logs"


def error_page(response: httpx.Response, status: int, signed_in: bool = True) -> str:
    """The page's one sentence, after checking that `response` is the error page of
    `status`, in the layout, with the console's headers and a way back."""
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("text/html")
    assert_headers(response)
    text = response.text
    assert f"Error {status}" in text
    assert (NAVIGATION in text) is signed_in, "navigation only for a signed-in role"
    assert 'class="button" href="/console/' in text, "no way back"
    found = PROBLEM.search(text)
    assert found, text[:500]
    # A refusal comes before anything ran; a failure after work began may be part-way.
    assert (f"Error {status}: nothing was changed." in text) is (status < 500), text[:500]
    assert 'class="notice"' not in text, "an action's notice is never on an error page"
    return html.unescape(found[1])


# (page, field as the query names it, a value it cannot read, a word of what it accepts)
BAD_FILTERS = (
    ("/console/events", "since", "soonish", "24h"),
    ("/console/events", "until", "2026-13-45", "24h"),
    ("/console/events", "outcome", "maybe", "applied"),
    ("/console/failed", "since", "yesterday", "24h"),
    ("/console/failed", "until", "99999999999d", "24h"),
    ("/console/records", "status", "maybe", "failed"),
    ("/console/deliveries", "state", "maybe", "dead"),
    ("/console/replay", "since", "soonish", "24h"),
    ("/console/replay", "until", "<b>late</b>", "24h"),
    ("/console/replay", "delivery_state", "maybe", "dead"),
)


@pytest.mark.parametrize(("path", "name", "value", "accepted"), BAD_FILTERS)
def test_a_bad_filter_is_a_400_page_naming_the_field_and_what_it_accepts(
    console: Console, path: str, name: str, value: str, accepted: str
) -> None:
    for browser in (console.admin, console.support):
        sentence = error_page(browser.get(path, **{name: value}), 400)
        assert sentence.startswith(f"{name}: "), sentence
        assert accepted in sentence, sentence
        assert "check its values" not in sentence
    page = console.admin.get(path, **{name: value}).text
    assert "<b>late</b>" not in page, "the value is shown escaped, if at all"
    assert f'href="{path}"' in page, "the way back is the same list, without filters"


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("since", "soonish", "24h"),
        ("delivery_state", "maybe", "dead"),
        ("type", "generation\x00succeeded", "NUL"),
    ],
)
def test_a_bad_field_in_the_replay_confirmation_is_a_400_page_naming_it(
    console: Console, name: str, value: str, accepted: str
) -> None:
    admin = console.admin
    posted = admin.post("/console/replay", csrf=admin.csrf(), **{name: value})
    sentence = error_page(posted, 400)
    assert sentence.startswith(f"{name}: "), sentence
    assert accepted in sentence, sentence


def test_what_does_not_exist_is_a_404_page_and_outside_the_console_still_json(
    console: Console,
) -> None:
    admin = console.admin
    for path in (
        "/console/events/evt_nowhere",
        "/console/records/task_nowhere",
        "/console/nowhere",
        "/console/static/nowhere.css",
    ):
        sentence = error_page(admin.get(path), 404)
        assert sentence, path
    for kind in ("event", "record"):
        assert kind in error_page(admin.get(f"/console/{kind}", id=".."), 404).lower()
    replayed = admin.post(
        "/console/events/replay", csrf=admin.csrf(), event_id=quote("evt_nowhere", safe="")
    )
    assert "event" in error_page(replayed, 404).lower()
    # Signed out, an address under the console's open paths: the same page, no navigation,
    # and sign-in as the way back.
    missing = console.anonymous.get("/console/static/nowhere.css")
    error_page(missing, 404, signed_in=False)
    assert 'href="/console/login"' in missing.text
    # Outside the console, the same failures stay JSON.
    rivya = console.rivya
    unknown_event = rivya.admin("/events/evt_nowhere")
    assert (unknown_event.status_code, unknown_event.json()["error"]) == (404, "not_found")
    unknown_path = rivya.admin("/nowhere")
    assert (unknown_path.status_code, unknown_path.json()["error"]) == (404, "http_error")
    unsigned = HTTP.post(f"{rivya.server.url}/webhooks/rivya", json={})
    assert unsigned.headers["content-type"] == "application/json"


def test_an_action_the_role_may_not_do_is_a_403_page(console: Console) -> None:
    admin, support, event = console.admin, console.support, console.event
    forms = {
        "/console/events/replay": {"event_id": quote(event["id"], safe="")},
        "/console/replay": {"type": event["type"]},
        "/console/reprocess": {},
        "/console/records/reconcile": {"task_id": quote(event["data"]["id"], safe="")},
    }
    for path, fields in forms.items():
        forced = support.post(path, csrf=support.csrf(), **fields)
        assert "can read, not act" in error_page(forced, 403), path
        forged = admin.post(path, csrf="not-the-token", **fields)
        assert "form expired" in error_page(forged, 403), path
        signed_out = console.anonymous.post(path, **fields)
        assert error_page(signed_out, 403, signed_in=False) == "Sign in first."
        assert 'href="/console/login"' in signed_out.text


def test_an_ended_session_is_a_403_page_that_says_so(console: Console) -> None:
    ended = Browser(console.rivya.server.url)
    try:
        assert ended.sign_in().status_code == 303
        csrf = ended.csrf()
        cookies = dict(ended.client.cookies)
        assert ended.post("/console/logout", csrf=csrf).status_code == 303
        ended.client.cookies.update(cookies)
        refused = ended.post("/console/reprocess", csrf=csrf)
        assert "sign in again" in error_page(refused, 403, signed_in=False)
        assert ended.get("/console/").headers["location"] == "/console/login"
    finally:
        ended.client.close()


def test_an_action_this_service_cannot_do_is_a_409_page(console: Console) -> None:
    admin, event = console.admin, console.event
    asked = admin.post(
        "/console/records/reconcile",
        csrf=admin.csrf(),
        task_id=quote(event["data"]["id"], safe=""),
    )
    assert "RECEIVER_RIVYA_API_KEY" in error_page(asked, 409)
    nowhere = admin.post(
        "/console/events/replay",
        csrf=admin.csrf(),
        event_id=quote(event["id"], safe=""),
        destination="nowhere",
    )
    assert "nowhere" in error_page(nowhere, 409)


def test_unreadable_forms_and_methods_are_pages(console: Console) -> None:
    admin = console.admin
    oversized = admin.post("/console/reprocess", csrf=admin.csrf(), note=OVERSIZED)
    error_page(oversized, 413)
    multipart = admin.client.post(
        "/console/reprocess", data={"csrf": admin.csrf()}, files={"f": ("a.txt", b"a")}
    )
    error_page(multipart, 415)
    too_many = admin.post(
        "/console/reprocess", csrf=admin.csrf(), **{f"f{n}": "x" for n in range(40)}
    )
    assert "fields" in error_page(too_many, 400)
    wrong_method = admin.client.put("/console/replay")
    error_page(wrong_method, 405)
    assert wrong_method.headers["allow"]
    csrf = admin.csrf()

    def slowly() -> Iterator[bytes]:
        yield f"csrf={csrf}".encode()
        time.sleep(REQUEST_TIMEOUT_SECONDS + 1)
        yield b"&note=late"

    late = admin.client.post(
        "/console/reprocess",
        content=slowly(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    error_page(late, 408)
    signed_out = console.anonymous.post("/console/login", csrf="x", token=OVERSIZED)
    error_page(signed_out, 413, signed_in=False)


def test_actions_that_cannot_work_are_not_offered(
    console: Console,
    start_server: Callable[..., ReceiverProcess],
    fake_rivya: FakeRivya,
    browsers: list[Browser],
) -> None:
    """Asking Rivya needs an API key and the admin role; support is offered no action at
    all (no form that posts but its sign-out, no link to an action's confirmation)."""
    event = console.event
    # (page, its query, whether an administrator is offered an action there; without an API
    # key a record's page offers none)
    for path, query, admin_acts in (
        ("/console/", {}, False),
        ("/console/events", {}, True),
        (f"/console/events/{quote(event['id'], safe='')}", {}, True),
        (f"/console/records/{quote(event['data']['id'], safe='')}", {}, False),
        ("/console/deliveries", {"state": "delivered"}, False),
        ("/console/replay", {"type": event["type"]}, True),
    ):
        shown = console.support.get(path, **query)
        assert shown.status_code == 200, path
        assert OFFERED.findall(shown.text) == [], path
        assert 'action="/console/logout"' in shown.text
        if admin_acts:  # the same page offers the administrator something: the check sees it
            assert OFFERED.findall(console.admin.get(path, **query).text), path

    task = quote(event["data"]["id"], safe="")
    without_key = console.admin.get(f"/console/records/{task}").text
    assert "Ask Rivya" not in without_key
    assert "RECEIVER_RIVYA_API_KEY" in without_key, "the page says why it is not offered"

    server = start_server(support_token=SUPPORT_TOKEN, **reconciling(fake_rivya))
    event = make_event()
    sent = Rivya(server, console.rivya.secret, console.rivya.sensitive).send(event)
    assert sent.json()["status"] == "accepted"
    task = quote(event["data"]["id"], safe="")
    for token, offered in ((ADMIN_TOKEN, True), (SUPPORT_TOKEN, False)):
        browsers.append(Browser(server.url))
        assert browsers[-1].sign_in(token).status_code == 303
        record_page = browsers[-1].get(f"/console/records/{task}").text
        assert ("Ask Rivya about this task now" in record_page) is offered, token
        assert "RECEIVER_RIVYA_API_KEY" not in record_page


@pytest.mark.parametrize(
    "path",
    [
        "/console/events?type=a%00b",
        "/console/events/a%00b",
        "/console/destinations/a%00b",
        "/console/static/a%00b",
        "/console/login?x=%00",
    ],
)
def test_a_nul_in_a_console_address_is_a_400_page_for_whoever_asks(
    console: Console, path: str
) -> None:
    """The console's page (the layout of the role signed in, the signed-out page otherwise,
    the headers), not the JSON of the check outside the console, which /admin keeps."""
    for browser, signed_in in (
        (console.admin, True),
        (console.support, True),
        (console.anonymous, False),
    ):
        assert "NUL" in error_page(browser.client.get(path), 400, signed_in), path
    # The console's own address without its slash is the console's too (sent on to it).
    bare = console.admin.client.get("/console?x=%00", follow_redirects=True)
    assert "NUL" in error_page(bare, 400)
    answer = console.rivya.admin("/events?type=a%00b")
    assert answer.json() == {"error": "invalid_request", "detail": "the URL holds a NUL character"}


def test_an_unexpected_failure_is_a_500_page_in_the_layout_that_keeps_its_text_to_the_log(
    start_server: Callable[..., ReceiverProcess], backend: str, browsers: list[Browser]
) -> None:
    """A write the database refuses for a reason the service cannot name: a 500 page inside
    the layout, with the headers, saying it was no fault of the request, that it may have
    been done in part, and when; never the exception's text. Its class reaches the log.
    (It was Starlette's plain-text 500, without the console's headers.)"""
    server = start_server()
    browsers.append(Browser(server.url))
    browser = browsers[-1]
    assert browser.sign_in().status_code == 303
    csrf = browser.csrf()
    with reading(server.env["RECEIVER_DATABASE_URL"]) as db:
        for statement in REFUSE_SIGN_OUT[backend]:
            db.execute(sa.text(statement))
        db.commit()
    failed = browser.post("/console/logout", csrf=csrf)
    sentence = error_page(failed, 500)
    assert sentence == "Something went wrong on our side; nothing you typed caused it."
    assert "Error 500: it may have been done in part: check before trying again." in failed.text
    assert re.search(r'This happened at <time datetime="[0-9-]+T[0-9:]+\+00:00"', failed.text)
    for inner in (REFUSED, "Traceback", "Error:", "sqlalchemy", "console_sessions"):
        assert inner not in failed.text, inner
    # The request's line is written once its answer is sent.
    wait_until(
        lambda: '"path":"/console/logout","http_status":500' in server.output(),
        timeout=10,
        what="the request's log line",
    )
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    (logged,) = [line for line in lines if line["event"] == "console_failed"]
    assert logged["level"] == "error", logged
    assert logged["error_class"], logged
    assert REFUSED not in server.output(), "the exception's text stays out of the log"


@pytest.mark.sqlite_only
def test_a_database_too_busy_to_write_is_a_503_page_in_its_own_words(
    start_server: Callable[..., ReceiverProcess], browsers: list[Browser]
) -> None:
    """One of the service's own failures after work began says what it says (how far it
    got, when it can), not "nothing was changed": SQLite's write lock held elsewhere."""
    server = start_server(database_busy_timeout_seconds="0.5")
    browsers.append(Browser(server.url))
    browser = browsers[-1]
    assert browser.sign_in().status_code == 303
    csrf = browser.csrf()
    path = sqlite_path(server.env["RECEIVER_DATABASE_URL"])
    assert path is not None
    lock = sqlite3.connect(path, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        busy = browser.post("/console/logout", csrf=csrf)
    finally:
        lock.close()
    assert error_page(busy, 503) == WORDS[503][1]
    assert "Error 503: the database is unavailable; retry later." in busy.text
    assert busy.headers["retry-after"]
