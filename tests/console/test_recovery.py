"""Recovery through the console, over HTTP, against a real server and real sinks: a destination
fails until its retries run out, comes back, and its dead letters are replayed with its one
action; replay by filter counts deliveries per destination; every replay and reprocess says
what it did in numbers, and a bulk reprocess asks first; each destination has its own page."""

import base64
import html
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Rivya
from tests.console.conftest import CSRF, SUPPORT_TOKEN, Browser
from tests.databases import reading
from tests.helpers import (
    ANSWER_200,
    Downstream,
    ReceiverProcess,
    always,
    make_event,
    new_secret,
    wait_until,
    write_destinations,
)
from tests.test_metrics import QUICK

EVENTS = 3
DEAD_CARD = re.compile(r'Dead letters</span><span class="value"><a [^>]*>(\d+)</a>')
CURRENT_TAB = re.compile(r'<a href="[^"]*\?state=(\w+)" class="current">')


def text_of(page: str) -> str:
    """A page's text as a reader sees it: tags dropped, entities read, spaces folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def main_of(page: str) -> str:
    """A page's own part, after the layout's header (whose sign-out form has a token too)."""
    return page.split("<main>", 1)[1]


def notice(page: str) -> str:
    found = re.search(r'<p class="notice" role="status">(.*?)</p>', page)
    assert found, "no notice"
    return html.unescape(found[1])


def confirm(browser: Browser, path: str) -> tuple[str, Any]:
    """A confirmation page's text and the answer to its form, sent with its own token."""
    shown = browser.get(path)
    assert shown.status_code == 200, path
    token = CSRF.search(main_of(shown.text))
    assert token, f"no confirmation form on {path}"
    return text_of(shown.text), browser.post(path, csrf=token[1])


@dataclass
class Recovery:
    sender: Rivya
    healthy: Downstream
    billing: Downstream
    event_ids: list[str]
    browser: Callable[[], Browser]

    def admin(self) -> Browser:
        browser = self.browser()
        assert browser.sign_in().status_code == 303
        return browser

    def listed(self, state: str, destination: str) -> list[str]:
        query = f"/deliveries?state={state}&destination={destination}"
        return [d["event_id"] for d in self.sender.admin(query).json()["deliveries"]]


@pytest.fixture
def recovery(
    start_server: Callable[..., ReceiverProcess],
    rivya: Rivya,
    own_downstream: Callable[..., Downstream],
    browsers: list[Browser],
    tmp_path: Path,
) -> Recovery:
    """Three events delivered to the healthy `default` and dead in `billing`, whose sink
    answers 503 (two attempts each)."""
    healthy, billing = own_downstream(), own_downstream(always(503))
    secret = new_secret()
    rivya.sensitive.add(secret)
    table = {"name": "billing", "url": billing.url, "signing_secrets": secret}
    server = start_server(
        support_token=SUPPORT_TOKEN,
        forward_url=healthy.url,
        destinations_file=write_destinations(tmp_path / "d.toml", table),
        forward_retry_schedule="0.05",
        metrics_refresh_seconds=QUICK,
    )
    sender = Rivya(server, rivya.secret, rivya.sensitive)
    sent = [make_event() for _ in range(EVENTS)]
    for event in sent:
        assert sender.send(event).status_code == 200

    def browser() -> Browser:
        browsers.append(Browser(server.url))
        return browsers[-1]

    found = Recovery(sender, healthy, billing, [event["id"] for event in sent], browser)
    wait_until(lambda: len(found.listed("dead", "billing")) == EVENTS, timeout=10)
    wait_until(lambda: len(healthy.received) == EVENTS, timeout=10)
    return found


def dead_card(browser: Browser) -> int:
    found = DEAD_CARD.search(browser.get("/console/").text)
    assert found, "no dead-letter card"
    return int(found[1])


def test_a_destinations_dead_letters_replayed_with_its_one_action_clear_everywhere(
    recovery: Recovery,
) -> None:
    """The issue's walk: billing's dead letters, replayed from its row once it is back, leave
    the overview's card and the dead tab, read as recovered, and default receives nothing
    twice."""
    admin = recovery.admin()
    wait_until(lambda: dead_card(admin) == EVENTS, timeout=10, what="the card to count 3")
    overview = admin.get("/console/").text
    assert overview.count('/replay">Replay') == 1, "only billing has dead letters to replay"
    assert '<a class="button" href="/console/destinations/billing/replay">' in overview
    assert "Replay 3 dead letters" in overview
    # Its link opens its own page on the tab that needs action.
    assert 'href="/console/destinations/billing"' in overview
    page = admin.get("/console/destinations/billing").text
    assert CURRENT_TAB.findall(page) == ["dead"]
    assert all(event_id in page for event_id in recovery.event_ids)
    assert "Replay 3 dead letters" in page

    recovery.billing.respond = ANSWER_200
    asked, done = confirm(admin, "/console/destinations/billing/replay")
    assert "3 dead letters to billing: each is queued again, to billing only" in asked
    assert done.status_code == 303
    assert done.headers["location"].startswith(
        "/console/destinations/billing?done=replayed&replayed=billing%3A3&signed="
    )
    landed = admin.client.get(done.headers["location"]).text
    assert notice(landed) == "Replayed 3 deliveries: billing 3."
    # Queued, they left the dead tab at once: nobody can replay them twice.
    assert CURRENT_TAB.findall(landed) != ["dead"]
    dead_tab = admin.get("/console/destinations/billing", state="dead").text
    assert "No dead letters to billing." in dead_tab
    assert not any(event_id in dead_tab for event_id in recovery.event_ids)
    again = admin.get("/console/destinations/billing/replay").text
    assert "billing has no dead letters: nothing to replay." in text_of(again)
    assert CSRF.search(main_of(again)) is None

    wait_until(
        lambda: sorted(recovery.listed("recovered", "billing")) == sorted(recovery.event_ids),
        timeout=10,
        what="the dead letters to read recovered",
    )
    wait_until(lambda: dead_card(admin) == 0, timeout=10, what="the card to drop to 0")
    assert "Replay 3 dead letters" not in admin.get("/console/").text
    recovered = admin.get("/console/destinations/billing", state="recovered").text
    assert all(event_id in recovered for event_id in recovery.event_ids)
    # The event's page tells the story in order: billing dead (now recovered), then delivered.
    story = text_of(admin.get(f"/console/events/{recovery.event_ids[0]}").text)
    shown = re.findall(r"Delivery \d+ to (\w+): (\w+) queued .+? (\d+) attempts?", story)
    assert shown == [("default", "delivered", "1"), ("billing", "recovered", "2"),
                     ("billing", "delivered", "1")]  # fmt: skip
    assert story.count("finished") == 3
    assert sorted(recovery.healthy.ids()) == sorted(recovery.event_ids), "default got a repeat"
    (audit,) = [
        line
        for line in map(json.loads, re.findall(r"^\{.*\}$", recovery.sender.server.output(), re.M))
        if (line.get("event"), line.get("who"), line.get("what")) == ("audit", "console", "replay")
    ]
    assert (audit["count"], audit["by_destination"]) == (EVENTS, {"billing": EVENTS})


def test_replay_by_filter_counts_deliveries_per_destination_and_goes_where_the_state_holds(
    recovery: Recovery,
) -> None:
    """The dry run's numbers per destination, the same on the confirmation's button and the
    notice; with "latest delivery: dead" and each destination, only billing is sent any."""
    admin = recovery.admin()
    for filters, planned in (
        ({"delivery_state": "dead"}, "3 deliveries: billing 3"),
        ({"delivery_state": "delivered"}, "3 deliveries: default 3"),
        ({}, "6 deliveries: default 3, billing 3"),
        ({"delivery_state": "dead", "destination": "default"}, "0 deliveries"),
    ):
        page = text_of(admin.get("/console/replay", **filters).text)
        assert f"A dry run: nothing is queued yet. A replay would queue {planned}." in page
    step_one = admin.get("/console/replay", delivery_state="dead").text
    assert "Replay these 3 deliveries: billing 3" in text_of(step_one)
    assert recovery.listed("pending", "billing") == [], "the dry run queued nothing"

    recovery.billing.respond = ANSWER_200
    token = CSRF.search(step_one)
    assert token
    done = admin.post("/console/replay", csrf=token[1], delivery_state="dead")
    assert done.status_code == 303
    assert notice(admin.client.get(done.headers["location"]).text) == (
        "Replayed 3 deliveries: billing 3."
    )
    wait_until(lambda: len(recovery.listed("recovered", "billing")) == EVENTS, timeout=10)
    assert sorted(recovery.healthy.ids()) == sorted(recovery.event_ids), "default got a repeat"
    # A replay that matches nothing says so.
    token = CSRF.search(admin.get("/console/replay").text)
    assert token
    done = admin.post("/console/replay", csrf=token[1], delivery_state="dead")
    assert notice(admin.client.get(done.headers["location"]).text) == (
        "Nothing was replayed: no delivery matched."
    )


def test_reprocess_asks_first_with_the_count_and_says_what_changed(
    recovery: Recovery,
) -> None:
    """One event an older release quarantined (it applies now) and one still unreadable:
    the confirmation counts 2, and the answer says 1 changed outcome, 1 unchanged."""
    sender, url = recovery.sender, recovery.sender.server.env["RECEIVER_DATABASE_URL"]
    assert sender.send(make_event(data={"id": "task_q", "status": "??"})).json()["status"] == (
        "quarantined"
    )
    with reading(url) as db:
        db.execute(
            sa.text("UPDATE events SET outcome = 'quarantined' WHERE id = :id"),
            {"id": recovery.event_ids[0]},
        )
        db.commit()
    admin = recovery.admin()
    events = admin.get("/console/events").text
    assert '<a class="button" href="/console/reprocess">' in events, "offered as a link"
    asked, done = confirm(admin, "/console/reprocess")
    assert "2 quarantined events: each is parsed and applied again" in asked
    assert "Reprocess 2 events" in asked
    assert done.status_code == 303
    said = notice(admin.client.get(done.headers["location"]).text)
    assert said == "Reprocessed 2 events: 1 changed outcome, 1 unchanged."
    assert "parsed and applied again" not in said

    # Nothing changes a second time, and the answer says so.
    asked, done = confirm(admin, "/console/reprocess")
    assert "1 quarantined event:" in asked
    said = notice(admin.client.get(done.headers["location"]).text)
    assert said == "Reprocessed 1 event: 0 changed outcome, 1 unchanged."

    with reading(url) as db:
        db.execute(sa.text("UPDATE events SET outcome = 'applied'"))
        db.commit()
    nothing = admin.get("/console/reprocess").text
    assert "No quarantined events: nothing to reprocess." in text_of(nothing)
    assert CSRF.search(main_of(nothing)) is None, "nothing to confirm"


def test_destination_pages_and_the_overview_show_url_filters_and_a_paused_breaker(
    start_server: Callable[..., ReceiverProcess],
    rivya: Rivya,
    own_downstream: Callable[..., Downstream],
    browsers: list[Browser],
    tmp_path: Path,
) -> None:
    """`failing` is refused every attempt (two per event) until its breaker trips; `picky`
    has credentials in its URL, which no page shows, and filters, which both pages do."""
    picky_sink = own_downstream()
    user, password = "hook-user", "pw-" + secrets.token_hex(8)
    rivya.sensitive.add(password)
    picky_url = picky_sink.url.replace("http://", f"http://{user}:{password}@")
    tables = (
        {"name": "failing", "url": "http://127.0.0.1:9/hooks", "signing_secrets": new_secret()},
        {
            "name": "picky",
            "url": picky_url,
            "signing_secrets": new_secret(),
            "event_types": ["generation.failed"],
            "outcomes": ["applied"],
        },
    )
    server = start_server(
        support_token=SUPPORT_TOKEN,
        forward_url="",
        forward_signing_secrets="",
        destinations_file=write_destinations(tmp_path / "d.toml", *tables),
        forward_retry_schedule="0.01",
        metrics_refresh_seconds=QUICK,
    )
    sender = Rivya(server, rivya.secret, rivya.sensitive)
    for _ in range(11):
        assert sender.send(make_event("generation.failed")).status_code == 200

    def health(name: str) -> dict[str, Any]:
        entries = sender.admin("/destinations").json()["destinations"]
        found: dict[str, Any] = next(e for e in entries if e["destination"] == name)
        return found

    wait_until(lambda: health("failing")["dead"] == 11, timeout=30)
    assert health("failing")["consecutive_failures"] >= 20
    wait_until(lambda: health("picky")["delivered"] == 11, timeout=10)
    browsers.append(Browser(server.url))
    support = browsers[-1]
    assert support.sign_in(SUPPORT_TOKEN).status_code == 303

    def row(name: str) -> str:
        found = re.search(
            rf'<tr id="destination-{name}">(.*?)</tr>', support.get("/console/").text, re.S
        )
        assert found, name
        return text_of(found[1])

    wait_until(lambda: "paused" in row("failing"), timeout=10, what="failing to read paused")
    picky = row("picky")
    assert picky_sink.url in picky
    assert password not in picky
    assert user not in picky
    assert "generation.failed; applied" in picky
    assert "paused" not in picky
    assert "every type; applied, ignored, quarantined" in row("failing")
    assert "/replay" not in support.get("/console/").text, "support is offered no action"

    page = support.get("/console/destinations/picky").text
    assert CURRENT_TAB.findall(page) == ["delivered"], "nothing needs action: delivered"
    shown = text_of(page)
    assert picky_sink.url in shown
    assert password not in page
    assert "generation.failed" in shown
    assert "yes, up to 32 at a time" in shown
    failing = support.get("/console/destinations/failing").text
    assert "paused" in text_of(failing)
    tabs = re.findall(r'\?state=(\w+)"[^>]*>([^<]+) <span class="n">([^<]+)</span>', failing)
    assert [(state, label) for state, label, _ in tabs] == [
        ("dead", "dead letters"),
        ("pending", "pending"),
        ("disabled", "disabled"),
        ("orphaned", "orphaned"),
        ("delivered", "delivered"),
        ("replayed", "replayed"),
        ("recovered", "recovered"),
    ]
    assert {state: int(n) for state, _, n in tabs} == dict.fromkeys(
        ("pending", "disabled", "orphaned", "delivered", "replayed", "recovered"), 0
    ) | {"dead": 11}
    assert CURRENT_TAB.findall(failing) == ["dead"], "dead letters need action: dead"
    assert "Replay" not in failing, "support is offered no replay"

    # Names no destination has, an unknown state, a forged action: pages, and nothing done.
    for path, status in (
        ("/console/destinations/nowhere", 404),
        ("/console/destinations/Not%20a%20name", 404),
        ("/console/destinations/%2E%2E", 404),
        ("/console/destinations/nowhere/replay", 404),
        ("/console/destinations/picky?state=bogus", 400),
    ):
        answer = support.client.get(path)
        assert answer.status_code == status, path
        assert "<main>" in answer.text, path
    refused = support.post("/console/destinations/failing/replay", csrf=support.csrf())
    assert refused.status_code == 403
    assert '"what":"replay"' not in server.output()


def test_forged_cursors_are_refused_as_400_never_a_500(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya, browsers: list[Browser]
) -> None:
    """A cursor is outside input: base64 JSON of the wrong types, text holding NUL, an ID no
    column holds. Each was a 500 (from int(), or the database) on a listing's next page."""
    server = start_server()
    sender = Rivya(server, rivya.secret, rivya.sensitive)
    browsers.append(Browser(server.url))
    admin = browsers[-1]
    assert admin.sign_in().status_code == 303

    def cursor(values: str) -> str:
        return base64.urlsafe_b64encode(values.encode()).decode()

    forged = [cursor(v) for v in ('["x"]', "[1e400]", f"[{2**63}]", "[-1]", "[true]")]
    forged += [cursor(v) for v in ('["a\\u0000b", "x"]', '[1, "x"]', '["2026-12-01", 7]')]
    for value in forged:
        for path in (
            "/console/destinations/default",
            "/console/deliveries",
            "/console/events",
            "/console/records",
        ):
            answer = admin.get(path, cursor=value)
            assert answer.status_code == 400, (path, value)
            assert "cursor: not one this service gave out" in answer.text, (path, value)
        for path in ("/deliveries", "/events", "/records"):
            answer = sender.admin(path, params={"cursor": value})
            assert answer.status_code == 400, (path, value)


@dataclass
class Removed:
    """A server started without `billing`, whose deliveries of `event_ids` still wait."""

    sender: Rivya
    admin: Browser
    event_ids: list[str]


@pytest.fixture
def removed(
    start_server: Callable[..., ReceiverProcess],
    rivya: Rivya,
    own_downstream: Callable[..., Downstream],
    browsers: list[Browser],
    tmp_path: Path,
) -> Removed:
    """`billing` refused two events (its next attempt an hour away) and was removed from the
    destinations file; the server started again without it, an admin signed in."""
    slow = own_downstream(always(503))
    table = {"name": "billing", "url": slow.url, "signing_secrets": new_secret()}
    first = start_server(
        destinations_file=write_destinations(tmp_path / "d.toml", table),
        forward_retry_schedule="3600",
    )
    sent = [make_event() for _ in range(2)]
    for event in sent:
        assert Rivya(first, rivya.secret, rivya.sensitive).send(event).status_code == 200
    wait_until(lambda: len(slow.received) == 2, timeout=10)
    first.stop()
    second = start_server(metrics_refresh_seconds=QUICK)
    browsers.append(Browser(second.url))
    assert browsers[-1].sign_in().status_code == 303
    return Removed(
        Rivya(second, rivya.secret, rivya.sensitive), browsers[-1], [e["id"] for e in sent]
    )


def test_a_destination_no_longer_configured_has_its_page_on_its_orphaned_deliveries(
    removed: Removed,
) -> None:
    """Removed from the file while its deliveries wait: the overview still links it, its
    page opens on them (orphaned) and says it is not configured, and nothing offers to
    replay to it."""
    admin = removed.admin
    row = re.search(r'<tr id="destination-billing">(.*?)</tr>', admin.get("/console/").text, re.S)
    assert row, "the overview lists it"
    assert "not configured" in text_of(row[1])
    assert "/console/destinations/billing/replay" not in row[1]
    page = admin.get("/console/destinations/billing").text
    assert CURRENT_TAB.findall(page) == ["orphaned"]
    assert "not configured" in text_of(page)
    assert "Replay" not in text_of(main_of(page)).replace("replayed", "")
    assert admin.get("/console/destinations/billing/replay").status_code == 404


def test_an_unknown_destination_is_refused_by_the_deliveries_page_and_api_as_by_the_cli(
    removed: Removed,
) -> None:
    """The console's deliveries page is a 400 page naming the destination no configuration
    or delivery names, in the CLI's words (it was an empty list), as is /admin/deliveries;
    one removed from the file while its deliveries wait is still listed by both."""
    admin, sender = removed.admin, removed.sender
    sentence = "destination: 'nope' is not configured"
    refused = admin.get("/console/deliveries", state="pending", destination="nope")
    assert refused.status_code == 400, text_of(main_of(refused.text))
    assert sentence in text_of(main_of(refused.text)), "the page says why, inside the layout"
    answer = sender.admin("/deliveries", params={"destination": "nope"})
    assert (answer.status_code, answer.json()["detail"]) == (400, sentence)
    listed = admin.get("/console/deliveries", state="orphaned", destination="billing")
    assert listed.status_code == 200
    assert all(event_id in text_of(main_of(listed.text)) for event_id in removed.event_ids)
    kept = sender.admin("/deliveries", params={"destination": "billing"})
    assert sorted((d["event_id"], d["state"]) for d in kept.json()["deliveries"]) == sorted(
        (event_id, "orphaned") for event_id in removed.event_ids
    )
