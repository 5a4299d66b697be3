"""The console over plain HTTP, against a real server: sign-in, sessions, CSRF, roles, the
headers on every page, hostile payloads rendered inert, and nothing secret shown."""

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, Rivya, Sensitive
from tests.console.conftest import CSRF, SUPPORT_TOKEN, Browser
from tests.helpers import Downstream, ReceiverProcess, make_event, wait_until

PAGES = (
    "/console/",
    "/console/failed",
    "/console/records",
    "/console/events",
    "/console/deliveries",
    "/console/replay",
    "/console/reprocess",
    "/console/destinations/default",
    "/console/destinations/default/replay",
)
HOSTILE = "</pre><script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


@pytest.fixture
def console(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    browsers: list[Browser],
) -> tuple[Rivya, Callable[[], Browser]]:
    server = start_server(support_token=SUPPORT_TOKEN, forward_url=own_downstream().url)

    def browser() -> Browser:
        browsers.append(Browser(server.url))
        return browsers[-1]

    return Rivya(server, secrets_in_use[0], sensitive), browser


def assert_headers(response: Any) -> None:
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"


def test_every_page_needs_a_session_and_every_answer_carries_the_headers(
    console: tuple[Rivya, Callable[[], Browser]],
) -> None:
    _, browser = console
    anonymous = browser()
    for path in (*PAGES, "/console/records/task_x", "/console/events/evt_x"):
        response = anonymous.get(path)
        assert (response.status_code, response.headers["location"]) == (303, "/console/login")
        assert_headers(response)
    for path in (
        "/console/replay",
        "/console/reprocess",
        "/console/events/replay",
        "/console/records/reconcile",
    ):
        response = anonymous.post(path)
        assert response.status_code == 403
        assert_headers(response)
    for path in ("/console/login", "/console/static/console.css", "/console/static/console.js"):
        response = anonymous.get(path)
        assert response.status_code == 200
        assert_headers(response)


def test_sign_in_sets_a_strict_session_cookie_and_sign_out_ends_it(
    console: tuple[Rivya, Callable[[], Browser]],
) -> None:
    _, browser = console
    admin = browser()
    response = admin.sign_in()
    assert (response.status_code, response.headers["location"]) == (303, "/console/")
    cookie = response.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=strict", "path=/console", "max-age=28800"):
        assert attribute in cookie
    assert "secure" not in cookie.split("; "), "plain HTTP here: Secure only over https"
    for path in PAGES:
        page = admin.get(path)
        assert page.status_code == 200, path
        assert_headers(page)
    stolen = dict(admin.client.cookies)
    assert admin.post("/console/logout", csrf=admin.csrf()).status_code == 303
    assert admin.get("/console/").status_code == 303
    replayed = browser()
    replayed.client.cookies.update(stolen)
    assert replayed.get("/console/").status_code == 303, "a signed-out session stays ended"


def test_failed_sign_ins_are_refused_logged_without_the_token_and_rate_limited(
    console: tuple[Rivya, Callable[[], Browser]],
) -> None:
    rivya, browser = console
    guesser = browser()
    for attempt in range(5):
        response = guesser.sign_in(f"wrong-token-number-{attempt}")
        assert response.status_code == 401
    assert guesser.sign_in("wrong-token-number-5").status_code == 429
    assert guesser.sign_in(ADMIN_TOKEN).status_code == 303, "the right token always signs in"
    output = rivya.server.output()
    assert output.count('"event":"console_sign_in_failed"') == 5
    assert output.count('"event":"console_sign_in_refused"') == 1
    assert "wrong-token-number" not in output
    forged = browser()
    forged.csrf("/console/login")
    response = forged.post("/console/login", csrf="forged", token=ADMIN_TOKEN)
    assert response.status_code == 403


def test_actions_need_the_admin_role_and_a_valid_csrf_token(
    console: tuple[Rivya, Callable[[], Browser]],
) -> None:
    rivya, browser = console
    event = make_event()
    assert rivya.send(event).json()["status"] == "accepted"
    wait_until(lambda: rivya.admin(f"/events/{event['id']}").json()["deliveries"], timeout=10)

    def deliveries() -> int:
        return len(rivya.admin(f"/events/{event['id']}").json()["deliveries"])

    replay = "/console/events/replay"
    admin = browser()
    admin.sign_in()
    assert admin.post(replay, event_id=event["id"]).status_code == 403
    assert admin.post(replay, csrf="not-the-token", event_id=event["id"]).status_code == 403
    support = browser()
    assert support.sign_in(SUPPORT_TOKEN).status_code == 303
    for path in PAGES:
        assert support.get(path).status_code == 200
    page = support.get(f"/console/events/{event['id']}").text
    assert "Replay" not in page, "no action is offered to support"
    assert support.post(replay, csrf=support.csrf(), event_id=event["id"]).status_code == 403
    assert support.post("/console/reprocess", csrf=support.csrf()).status_code == 403
    assert deliveries() == 1, "refused actions changed nothing"
    done = admin.post(replay, csrf=admin.csrf(), event_id=event["id"])
    location = f"/console/events/{event['id']}?done=replayed&replayed=default%3A1&signed="
    assert done.status_code == 303
    assert done.headers["location"].startswith(location)
    assert deliveries() == 2
    assert '"what":"replay"' in rivya.server.output()
    assert '"who":"console"' in rivya.server.output()


def test_hostile_payloads_render_inert_and_no_page_shows_a_secret(
    console: tuple[Rivya, Callable[[], Browser]],
    secrets_in_use: tuple[str, str],
    forward_secret: str,
) -> None:
    rivya, browser = console
    event = make_event("generation.failed")
    event["data"]["error"] = {"code": HOSTILE, "message": HOSTILE}
    event["data"]["model"] = HOSTILE
    event["data"]["id"] = f"task_{HOSTILE}"
    assert rivya.send(event).json()["status"] == "accepted"
    admin = browser()
    admin.sign_in()
    task = event["data"]["id"]
    shown = [
        admin.get(path)
        for path in (
            *PAGES,
            f"/console/events/{httpx_quote(event['id'])}",
            f"/console/records/{httpx_quote(task)}",
        )
    ]
    assert all(page.status_code == 200 for page in shown), [p.status_code for p in shown]
    for page in shown:
        assert "<script>alert" not in page.text
        assert "onerror=alert(2)>" not in page.text
        assert "<script" not in page.text.replace('<script src="/console/static/console.js"', "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown[-1].text
    secrets = [ADMIN_TOKEN, SUPPORT_TOKEN, *secrets_in_use, forward_secret]
    for page in shown:
        text = page.text + str(page.headers)
        assert [s for s in secrets if s in text] == []


def test_the_console_can_be_turned_off(
    start_server: Callable[..., ReceiverProcess], browsers: list[Browser]
) -> None:
    server = start_server(console="false")
    browsers.append(browser := Browser(server.url))
    assert browser.get("/console/").status_code == 404
    assert browser.get("/console/login").status_code == 404


def httpx_quote(value: str) -> str:
    return quote(value, safe="")


def test_changing_a_token_ends_the_sessions_made_with_the_old_one(
    start_server: Callable[..., ReceiverProcess], browsers: list[Browser]
) -> None:
    first = start_server(support_token=SUPPORT_TOKEN)
    browsers.extend([admin := Browser(first.url), support := Browser(first.url)])
    admin.sign_in()
    support.sign_in(SUPPORT_TOKEN)
    first.stop()
    new_token = "a-brand-new-admin-token-0001"  # noqa: S105 - a test fixture's token
    second = start_server(admin_token=new_token, support_token=SUPPORT_TOKEN)
    for browser in (admin, support):
        browser.client.base_url = httpx.URL(second.url)
    assert admin.get("/console/").status_code == 303, "the old admin token's session ended"
    assert support.get("/console/").status_code == 200, "the unchanged token's session lives"


def test_replay_by_filter_counts_first_and_acts_once_confirmed(
    console: tuple[Rivya, Callable[[], Browser]],
) -> None:
    rivya, browser = console
    failures = [make_event("generation.failed") for _ in range(3)]
    for event in (*failures, make_event()):
        assert rivya.send(event).json()["status"] == "accepted"
    admin = browser()
    admin.sign_in()
    step_one = admin.get("/console/replay", type="generation.failed")
    assert "A replay would queue 3 deliveries: default 3." in step_one.text
    assert "Replay these 3 deliveries: default 3" in step_one.text
    before = len(rivya.admin("/deliveries", params={"limit": 1000}).json()["deliveries"])
    assert before == 4, "the count queued nothing"
    csrf = CSRF.search(step_one.text)
    assert csrf is not None
    confirmed = admin.post("/console/replay", csrf=csrf[1], type="generation.failed")
    assert confirmed.status_code == 303
    after = rivya.admin("/deliveries", params={"limit": 1000}).json()["deliveries"]
    assert len(after) == 7
    assert admin.get("/console/replay", since="yesterday").status_code == 400


def test_failed_jobs_filter_and_a_records_history(
    console: tuple[Rivya, Callable[[], Browser]],
) -> None:
    rivya, browser = console
    failed = make_event("generation.failed")
    failed["data"]["error"]["code"] = "insufficient_credits"
    other = make_event("generation.failed")
    for event in (failed, other):
        assert rivya.send(event).json()["status"] == "accepted"
    quarantined = make_event(data={"id": "task_broken", "status": "unheard-of"})
    assert rivya.send(quarantined).json()["status"] == "quarantined"
    admin = browser()
    admin.sign_in()
    listing = admin.get("/console/failed", error_code="insufficient_credits").text
    assert failed["data"]["id"] in listing
    assert other["data"]["id"] not in listing
    found = admin.get("/console/failed", q=other["data"]["id"]).text
    assert other["data"]["id"] in found
    assert failed["data"]["id"] not in found
    record = admin.get(f"/console/records/{failed['data']['id']}").text
    assert failed["id"] in record
    assert "applied" in record
    assert admin.get("/console/records/task_nowhere").status_code == 404
    reprocessed = admin.post("/console/reprocess", csrf=admin.csrf())
    assert reprocessed.headers["location"].startswith(
        "/console/events?done=reprocessed&changed=0&became=quarantined%3A1&signed="
    )
    assert '"what":"reprocess"' in rivya.server.output()


def test_result_urls_show_only_on_their_records_and_events_own_pages(
    console: tuple[Rivya, Callable[[], Browser]],
) -> None:
    rivya, browser = console
    event = make_event()
    url = event["data"]["result"]["primary_url"]
    assert rivya.send(event).json()["status"] == "accepted"
    admin = browser()
    admin.sign_in()
    for path in PAGES:
        assert url not in admin.get(path).text, path
    assert url in admin.get(f"/console/records/{event['data']['id']}").text
    assert url in admin.get(f"/console/events/{event['id']}").text


def test_event_filters_and_replay_counts_agree_for_common_and_rare_values(
    console: tuple[Rivya, Callable[[], Browser]],
) -> None:
    """Rare types and outcomes are read from partial indexes (migration 0008), the common
    ones from the time index: each filter still finds exactly its events, and the replay
    page's count (a COUNT in SQL) agrees with the listing."""
    rivya, browser = console
    common, failed = make_event(), make_event("generation.failed")
    unknown = make_event("generation.rerouted")
    quarantined = make_event(data={"id": "task_odd", "status": "unheard-of"})
    for event in (common, failed, unknown, quarantined):
        assert rivya.send(event).status_code == 200
    support = browser()
    support.sign_in(SUPPORT_TOKEN)
    for filters, wanted in (
        ({"type": "generation.succeeded"}, {common["id"], quarantined["id"]}),
        ({"type": "generation.rerouted"}, {unknown["id"]}),
        ({"type": "generation.failed", "outcome": "applied"}, {failed["id"]}),
        ({"type": "generation.succeeded", "outcome": "quarantined"}, {quarantined["id"]}),
        ({"outcome": "quarantined"}, {quarantined["id"]}),
        ({"type": "generation.succeeded", "outcome": "stale"}, set()),
    ):
        listing = support.get("/console/events", **filters).text
        shown = {e["id"] for e in (common, failed, unknown, quarantined) if e["id"] in listing}
        assert shown == wanted, filters
    # A type no other test sends: the count is this test's alone.
    count = support.get("/console/replay", type="generation.rerouted").text
    assert "A replay would queue 1 delivery: default 1." in count
