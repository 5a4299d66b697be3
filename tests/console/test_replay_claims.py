"""Dead letters are claimed by the replay that queues them, over HTTP on a real server of
each backend: two confirmations of the same replay posted at once (two tabs, a double click),
two admin API replays at once, and a dead letter's own Replay button clicked twice queue each
dead letter once; a confirmation queues what its page counted, not what died since; an
unknown destination is the same 404 page on both steps."""

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa

from tests.console import test_recovery as walk
from tests.console.conftest import CSRF, Browser
from tests.console.test_recovery import EVENTS, Recovery, main_of, notice, text_of
from tests.databases import reading
from tests.helpers import ANSWER_200, always, make_event, wait_until

# The walk's three events, dead in billing and delivered to default.
recovery = walk.recovery


def deliveries_of(recovery: Recovery, event_id: str, to: str) -> list[dict[str, Any]]:
    shown = recovery.sender.admin(f"/events/{event_id}").json()["deliveries"]
    return [d for d in shown if d["destination"] == to]


def queued_once_each(recovery: Recovery) -> bool:
    """Each event has its dead letter (replayed now) and exactly one replay to billing."""
    return all(len(deliveries_of(recovery, e, "billing")) == 2 for e in recovery.event_ids)


HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')


def confirmation(browser: Browser, path: str) -> dict[str, str]:
    """The fields of a confirmation page's form (its token and pins), as a browser holds them."""
    form = main_of(browser.get(path).text)
    assert CSRF.search(form), f"no confirmation form on {path}"
    return dict(HIDDEN.findall(form))


def replayed_in(answer: Any, browser: Browser) -> int:
    """How many deliveries a console action's notice says it queued."""
    said = notice(browser.client.get(answer.headers["location"]).text)
    found = re.search(r"Replayed (\d+) deliver", said)
    return int(found[1]) if found else 0


def test_two_confirmations_posted_at_once_queue_each_dead_letter_once(
    recovery: Recovery,
) -> None:
    tabs = [recovery.admin(), recovery.admin()]
    path = "/console/destinations/billing/replay"
    forms = [confirmation(tab, path) for tab in tabs]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda i: tabs[i].post(path, **forms[i]), range(2)))
    assert [a.status_code for a in answers] == [303, 303]
    assert sum(replayed_in(a, tab) for a, tab in zip(answers, tabs, strict=True)) == EVENTS
    assert queued_once_each(recovery)


def test_two_admin_replays_at_once_queue_each_dead_letter_once(recovery: Recovery) -> None:
    body = {"delivery_state": "dead", "destination": "billing"}
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(lambda _: recovery.sender.admin("/replay", "POST", json=body), range(2))
        )
    assert [a.status_code for a in answers] == [202, 202]
    assert sum(a.json()["deliveries"] for a in answers) == EVENTS
    assert queued_once_each(recovery)


def test_a_dead_letters_own_replay_button_clicked_twice_queues_it_once(
    recovery: Recovery,
) -> None:
    admin = recovery.admin()
    (letter,) = deliveries_of(recovery, recovery.event_ids[0], "billing")
    path = "/console/destinations/billing/replay"
    page = admin.get("/console/destinations/billing", state="dead").text
    assert f'name="delivery_id" value="{letter["id"]}"' in page
    first = admin.post(path, csrf=admin.csrf(), delivery_id=str(letter["id"]))
    second = admin.post(path, csrf=admin.csrf(), delivery_id=str(letter["id"]))
    assert (replayed_in(first, admin), replayed_in(second, admin)) == (1, 0)
    assert len(deliveries_of(recovery, recovery.event_ids[0], "billing")) == 2
    assert len(deliveries_of(recovery, recovery.event_ids[1], "billing")) == 1
    for forged in ("0", "-1", "1e3", "x", "99999999999999999999", str(2**63)):
        assert admin.post(path, csrf=admin.csrf(), delivery_id=forged).status_code == 400


def test_a_confirmation_queues_what_its_page_counted_not_what_died_since(
    recovery: Recovery,
) -> None:
    """Counted, then another event dies in billing before the confirmation is posted: the
    replay queues the three counted, and the late one stays dead; the same by filter."""
    admin = recovery.admin()
    path = "/console/destinations/billing/replay"
    form = confirmation(admin, path)
    assert "up_to" in form
    late = die_in_billing(recovery)
    recovery.billing.respond = ANSWER_200
    assert replayed_in(admin.post(path, **form), admin) == EVENTS
    wait_until(lambda: len(recovery.listed("recovered", "billing")) == EVENTS, timeout=10)
    assert recovery.listed("dead", "billing") == [late]

    # The replay page's confirmation is pinned to its count too.
    step_one = admin.get("/console/replay", delivery_state="dead", destination="billing").text
    assert "A replay would queue 1 delivery: billing 1." in text_of(step_one)
    form = dict(HIDDEN.findall(main_of(step_one)))
    assert {"until", "up_to"} <= form.keys()
    recovery.billing.respond = always(503)
    later = die_in_billing(recovery)
    recovery.billing.respond = ANSWER_200
    assert replayed_in(admin.post("/console/replay", **form), admin) == 1
    wait_until(lambda: late in recovery.listed("recovered", "billing"), timeout=10)
    assert recovery.listed("dead", "billing") == [later]


def die_in_billing(recovery: Recovery) -> str:
    """A new event, sent while billing fails, until it is dead there."""
    event = make_event()
    assert recovery.sender.send(event).status_code == 200
    wait_until(lambda: event["id"] in recovery.listed("dead", "billing"), timeout=10)
    return str(event["id"])


def test_an_unknown_destination_is_the_same_404_page_on_both_steps(recovery: Recovery) -> None:
    admin = recovery.admin()
    for name in ("nowhere", "billing2"):
        path = f"/console/destinations/{name}/replay"
        asked, done = admin.get(path), admin.post(path, csrf=admin.csrf())
        assert (asked.status_code, done.status_code) == (404, 404)
        assert "No configured destination has that name." in text_of(asked.text)
        assert "No configured destination has that name." in text_of(done.text)


def test_the_replay_page_takes_only_pending_delivered_or_dead(recovery: Recovery) -> None:
    admin = recovery.admin()
    for state in ("replayed", "recovered"):
        page = admin.get("/console/replay", delivery_state=state)
        assert page.status_code == 400
        assert "delivery_state: Input should be 'pending', 'delivered' or 'dead'" in text_of(
            page.text
        )
        posted = admin.post("/console/replay", csrf=admin.csrf(), delivery_state=state)
        assert posted.status_code == 400
    assert recovery.listed("pending", "billing") == []


# The database refuses any new delivery to billing.
REFUSE_BILLING = {
    "sqlite": [
        "CREATE TRIGGER refuse_billing BEFORE INSERT ON deliveries "
        "WHEN NEW.destination = 'billing' BEGIN SELECT RAISE(ABORT, 'refused'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_billing() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'refused'; END $$",
        "CREATE TRIGGER refuse_billing BEFORE INSERT ON deliveries FOR EACH ROW "
        "WHEN (NEW.destination = 'billing') EXECUTE FUNCTION refuse_billing()",
    ],
}


def test_a_replay_that_fails_part_way_says_how_many_it_queued(
    recovery: Recovery, backend: str
) -> None:
    """An event replayed to each destination; the database refuses billing's, after
    default's was queued: the admin API's 503 and the console's error page say so in
    numbers, and the audit lines count what was queued."""
    server = recovery.sender.server
    with reading(server.env["RECEIVER_DATABASE_URL"]) as db:
        for statement in REFUSE_BILLING[backend]:
            db.execute(sa.text(statement))
        db.commit()
    first, second = recovery.event_ids[:2]
    answer = recovery.sender.admin(f"/events/{first}/replay", "POST", json={})
    said = "1 delivery: default 1 queued before it."
    assert (answer.status_code, answer.json()["error"]) == (503, "stopped_part_way")
    assert answer.json()["detail"].endswith(said), answer.json()
    admin = recovery.admin()
    page = admin.post("/console/events/replay", csrf=admin.csrf(), event_id=second)
    assert page.status_code == 503
    assert said in text_of(page.text)
    audits = [
        line
        for line in map(json.loads, re.findall(r"^\{.*\}$", server.output(), re.M))
        if (line.get("event"), line.get("what")) == ("audit", "replay")
    ]
    assert [(a["count"], a["by_destination"]) for a in audits] == [(1, {"default": 1})] * 2
