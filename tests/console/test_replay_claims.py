"""Dead letters are claimed by the replay that queues them, over HTTP on a real server of
each backend: two confirmations of the same replay posted at once (two tabs, a double click),
two admin API replays at once, and a dead letter's own Replay button clicked twice queue each
dead letter once; a confirmation queues what its page counted, not what died since (nor a
delivery retrying at the count), and refuses a forged pin; an unknown destination is the
same 404 page on both steps."""

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa

from tests.console import test_recovery as walk
from tests.console.conftest import CSRF, Browser
from tests.console.test_recovery import EVENTS, Recovery, main_of, notice, text_of
from tests.databases import reading
from tests.helpers import ANSWER_200, Received, always, make_event, wait_until

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
    """Counted, then deliveries die in billing before the confirmation is posted (one sent
    after the count, and one sent before it and still retrying at it, whose ID is below the
    largest counted): the replay queues those counted, its notice says as many as its page
    did, and the late ones stay dead; the same by filter."""
    admin = recovery.admin()
    path = "/console/destinations/billing/replay"
    retrying, dead_after_it = retrying_below_a_dead_letter(recovery)
    shown = admin.get(path).text
    assert f"{EVENTS + 1} dead letters to billing" in text_of(shown)
    form = dict(HIDDEN.findall(main_of(shown)))
    assert {"up_to", "dead_by"} <= form.keys()
    assert retrying in recovery.listed("pending", "billing"), "it died before the count"
    wait_until(lambda: retrying in recovery.listed("dead", "billing"), timeout=10)
    late = die_in_billing(recovery)
    recovery.billing.respond = ANSWER_200
    assert replayed_in(admin.post(path, **form), admin) == EVENTS + 1
    wait_until(lambda: dead_after_it in recovery.listed("recovered", "billing"), timeout=10)
    assert len(recovery.listed("recovered", "billing")) == EVENTS + 1
    assert sorted(recovery.listed("dead", "billing")) == sorted([retrying, late])

    # The replay page's confirmation is pinned to its count too.
    again, dead_after_again = retrying_below_a_dead_letter(recovery)
    step_one = admin.get("/console/replay", delivery_state="dead", destination="billing").text
    assert "A replay would queue 3 deliveries: billing 3." in text_of(step_one)
    form = dict(HIDDEN.findall(main_of(step_one)))
    assert {"until", "up_to", "dead_by"} <= form.keys()
    assert again in recovery.listed("pending", "billing"), "it died before the count"
    wait_until(lambda: again in recovery.listed("dead", "billing"), timeout=10)
    later = die_in_billing(recovery)
    recovery.billing.respond = ANSWER_200
    assert replayed_in(admin.post("/console/replay", **form), admin) == 3
    wait_until(lambda: dead_after_again in recovery.listed("recovered", "billing"), timeout=10)
    assert sorted(recovery.listed("dead", "billing")) == sorted([again, later])


# How long billing asks the retrying delivery to wait (Retry-After): long enough for the
# count to find it pending, short enough to see it die before the confirmation.
RETRY_AFTER_SECONDS = 5


def retrying_below_a_dead_letter(recovery: Recovery) -> tuple[str, str]:
    """Two new events: the first retrying in billing (asked to wait, then refused, so that
    it dies at its second attempt), then the second dead there soon (refused twice, its
    retry the schedule's 0.05 s), so that the first's delivery ID is below the second's dead
    letter. (Not a 410: that would disable billing, and the first would never die.)"""
    retrying, refused = make_event(), make_event()

    def respond(request: Received, _: int) -> tuple[int, dict[str, str]]:
        if str(retrying["id"]).encode() in request.body:
            return 503, {"retry-after": str(RETRY_AFTER_SECONDS)}
        return 503, {}

    recovery.billing.respond = respond
    assert recovery.sender.send(retrying).status_code == 200
    wait_until(lambda: retrying["id"] in recovery.listed("pending", "billing"), timeout=10)
    tried = str(retrying["id"]).encode()
    wait_until(lambda: any(tried in r.body for r in recovery.billing.received), timeout=10)
    assert recovery.sender.send(refused).status_code == 200
    wait_until(lambda: refused["id"] in recovery.listed("dead", "billing"), timeout=10)
    return str(retrying["id"]), str(refused["id"])


def die_in_billing(recovery: Recovery) -> str:
    """A new event, sent while billing fails, until it is dead there."""
    recovery.billing.respond = always(503)
    event = make_event()
    assert recovery.sender.send(event).status_code == 200
    wait_until(lambda: event["id"] in recovery.listed("dead", "billing"), timeout=10)
    return str(event["id"])


# What a forged or garbled `dead_by` may hold: not an instant, no zone, a span or a date the
# filters accept (a person's words, never what the page wrote), a Unix time, a month 13,
# digits that are not ASCII, a NUL, and an offset that carries year 1 or 9999 out of range.
FORGED_PINS = (
    "0001-01-01T00:30:00+01:00",
    "9999-12-31T23:30:00-01:00",
    "x",
    "24h",
    "2026-12-01",
    "2026-12-01T09:00:00",
    "1764580000",
    "2026-13-01T00:00:00+00:00",
    "\uff12\uff10\uff12\uff16-12-01T00:00:00+00:00",
    "2026-12-01T00:00:00+00:00\x00",
    "9" * 5000,
)


def test_a_forged_dead_by_is_a_400_naming_it_and_replays_nothing(recovery: Recovery) -> None:
    """Both confirmations (a destination's, and the replay page's) and the replay page's
    dry run refuse a `dead_by` that is not an instant as the page writes it, with a 400
    that names the field."""
    admin = recovery.admin()
    pinned = confirmation(admin, "/console/destinations/billing/replay")
    step_one = admin.get("/console/replay", delivery_state="dead", destination="billing").text
    by_filter = dict(HIDDEN.findall(main_of(step_one)))
    for path, form in (
        ("/console/destinations/billing/replay", pinned),
        ("/console/replay", by_filter),
    ):
        for forged in FORGED_PINS:
            answer = admin.post(path, **(form | {"dead_by": forged}))
            assert answer.status_code == 400, (path, forged)
            assert "dead_by" in answer.text, (path, forged)
    # A NUL in a URL is refused before any field is read (urls.py), as "the URL holds".
    for forged in (pin for pin in FORGED_PINS if "\x00" not in pin):
        answer = admin.get("/console/replay", delivery_state="dead", dead_by=forged)
        assert answer.status_code == 400, forged
        assert "dead_by" in answer.text, forged
    assert len(recovery.listed("dead", "billing")) == EVENTS
    assert all(len(deliveries_of(recovery, e, "billing")) == 1 for e in recovery.event_ids)


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
    numbers, without a Retry-After (the replay is not to be repeated whole), and the audit
    lines count what was queued."""
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
    assert "retry-after" not in answer.headers
    admin = recovery.admin()
    page = admin.post("/console/events/replay", csrf=admin.csrf(), event_id=second)
    assert page.status_code == 503
    assert "retry-after" not in page.headers
    assert said in text_of(page.text)
    audits = [
        line
        for line in map(json.loads, re.findall(r"^\{.*\}$", server.output(), re.M))
        if (line.get("event"), line.get("what")) == ("audit", "replay")
    ]
    assert [(a["count"], a["by_destination"]) for a in audits] == [(1, {"default": 1})] * 2
