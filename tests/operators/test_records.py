"""Registering tasks and listing records, through the admin API and the CLI of a real
server's database."""

import time
from typing import Any

from tests.conftest import Rivya
from tests.helpers import Operator, make_event


def test_records_are_listed_by_status_reference_and_staleness_in_cursor_pages(
    rivya: Rivya,
) -> None:
    run = f"{time.monotonic_ns()}"
    queued = [f"task_q{run}_{n}" for n in range(3)]
    for number, task_id in enumerate(queued):
        body = {"task_id": task_id, "reference": f"ref-{run}-{number}"}
        assert rivya.admin("/tasks", method="POST", json=body).status_code == 201
    done = [make_event() for _ in range(2)]
    for event in done:
        assert rivya.send(event).json()["status"] == "accepted"

    def listed(**query: Any) -> list[str]:
        answer = rivya.admin("/records", params=query)
        assert answer.status_code == 200, answer.text
        return [record["task_id"] for record in answer.json()["records"]]

    assert set(queued) <= set(listed(status="queued", limit=1000))
    assert not set(queued) & set(listed(status="succeeded", limit=1000))
    assert listed(reference=f"ref-{run}-1") == [queued[1]]
    assert listed()[:2] == [event["data"]["id"] for event in reversed(done)]
    assert not set(queued) & set(listed(stale_after="1h"))
    time.sleep(1.1)
    assert set(queued) <= set(listed(stale_after="1s", limit=1000))
    assert not {e["data"]["id"] for e in done} & set(listed(stale_after="1s", limit=1000))

    first = rivya.admin("/records", params={"limit": 2}).json()
    second = rivya.admin("/records", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    both = [r["task_id"] for r in first["records"] + second["records"]]
    assert both == listed(limit=4)
    for bad in ({"status": "lost"}, {"stale_after": "soon"}, {"cursor": "nope"}, {"limit": 0}):
        assert rivya.admin("/records", params=bad).status_code == 400, bad


def test_tasks_are_registered_and_records_listed_from_the_cli(rivya: Rivya) -> None:
    operator = Operator(rivya.server)
    task_id = f"task_cli_{time.monotonic_ns()}"
    created = operator.json("tasks", "register", task_id, "--reference", "order-7")
    assert (created["created"], created["record"]["reference"]) == (True, "order-7")
    assert operator.run("tasks", "register", task_id).startswith(f"Already known: {task_id}")
    conflict = operator.run("tasks", "register", task_id, "--reference", "order-8", code=1)
    assert conflict.strip().splitlines()[-1] == (
        f"Error: task {task_id!r} is registered with another reference"
    )
    shown = operator.run("records", "show", task_id)
    assert ["reference", "order-7"] in [line.split() for line in shown.splitlines()]
    listing = operator.json("records", "list", "--reference", "order-7")
    assert [record["task_id"] for record in listing["records"]] == [task_id]
    table = operator.run("records", "list", "--status", "queued", "--limit", "1000")
    assert table.splitlines()[0].split() == [
        "CHANGED_AT",
        "TASK_ID",
        "STATUS",
        "MODEL",
        "REFERENCE",
        "RECONCILE_STATE",
    ]
    assert task_id in table
    assert "--stale-after" in operator.run("records", "list", "--stale-after", "soon", code=1)


def test_a_webhook_for_a_registered_task_applies_and_keeps_its_registration(
    rivya: Rivya,
) -> None:
    event = make_event()
    task_id = event["data"]["id"]
    body = {"task_id": task_id, "reference": "order-9"}
    registered = rivya.admin("/tasks", method="POST", json=body).json()
    assert rivya.send(event).json()["status"] == "accepted"
    assert rivya.admin(f"/events/{event['id']}").json()["outcome"] == "applied"
    record = rivya.admin(f"/records/{task_id}").json()
    assert (
        record
        | {
            "status": "succeeded",
            "last_event_id": event["id"],
            "reference": "order-9",
            "registered_at": registered["registered_at"],
        }
        == record
    )


def test_records_show_words_credits_as_the_console_does(rivya: Rivya) -> None:
    """`records show` says what was returned, and "not reported yet" where Rivya has not."""
    operator = Operator(rivya.server)
    charged = make_event()
    charged["data"] |= {"reserved_credits": 120, "final_credits": 80}
    unreported = make_event("generation.failed")
    unreported["data"] |= {"reserved_credits": 120, "final_credits": None}
    for event in (charged, unreported):
        assert rivya.send(event).json()["status"] == "accepted"

    def credit_lines(event: dict[str, Any]) -> list[str]:
        shown = operator.run("records", "show", event["data"]["id"]).splitlines()
        return [" ".join(line.split()) for line in shown if "credits" in line]

    assert credit_lines(charged) == [
        "reserved_credits 120",
        "final_credits 80",
        "credits_returned 40 returned",
    ]
    assert credit_lines(unreported) == [
        "reserved_credits 120",
        "final_credits not reported yet",
        "credits_returned not reported yet",
    ]
