"""Reconciliation through real `receiver` processes, a fake Rivya API on loopback and real
sinks, on each backend: registered tasks whose webhooks never come are completed, once, and
Rivya's failures stop nothing else."""

import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

from tests.conftest import ADMIN_TOKEN, Rivya, Sensitive
from tests.console.conftest import Browser
from tests.databases import reading
from tests.fake_rivya import Answer, FakeRivya, error
from tests.helpers import (
    HTTP,
    Downstream,
    Operator,
    ReceiverProcess,
    iso,
    make_event,
    only,
    run_cli,
    wait_until,
    write_destinations,
)
from tests.reconcile.conftest import reconciling


def register(rivya: Rivya, task_id: str, reference: str | None = None) -> Any:
    body = {"task_id": task_id} | ({"reference": reference} if reference else {})
    return rivya.admin("/tasks", method="POST", json=body)


def running(generation: dict[str, Any], status: str = "processing") -> dict[str, Any]:
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    return generation | {
        "status": status,
        "result": None,
        "error": None,
        "updated_at": iso(earlier),
    }


def test_a_registered_task_whose_webhook_never_comes_is_completed_by_the_service(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    fake_rivya: FakeRivya,
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    tmp_path: Path,
) -> None:
    """`serve` runs passes on its interval: a registered task Rivya reports running stays
    so; once Rivya reports it ended, its record is complete, each destination that wants it
    gets one synthesized event signed with its own secret, and the real webhook arriving
    late is stale: sent only to the destination whose `outcomes` names `stale`, so that the
    others hear of the result once."""
    sinks = {"everything": own_downstream(), "failures": own_downstream(), "late": own_downstream()}
    keys = {name: new_secrets() for name in sinks}
    file = write_destinations(
        tmp_path / "destinations.toml",
        {
            "name": "everything",
            "url": sinks["everything"].url,
            "signing_secrets": keys["everything"],
        },
        {
            "name": "failures",
            "url": sinks["failures"].url,
            "signing_secrets": keys["failures"],
            "event_types": ["generation.failed"],
        },
        {
            "name": "late",
            "url": sinks["late"].url,
            "signing_secrets": keys["late"],
            "outcomes": ["applied", "stale"],
        },
    )
    server = start_server(
        **only(file),
        **reconciling(
            fake_rivya,
            reconcile_after_seconds="1",
            reconcile_interval_seconds="0.3",
            low_credits_threshold="1000",
        ),
    )
    rivya = Rivya(server, secrets_in_use[0], sensitive)
    event = make_event()
    task_id, generation = event["data"]["id"], event["data"]
    fake_rivya.generations[task_id] = running(generation)

    created = register(rivya, task_id, "order-1")
    assert created.status_code == 201
    assert created.json() | {"registered_at": None} == created.json() | {
        "task_id": task_id,
        "status": "queued",
        "reference": "order-1",
        "updated_at": None,
        "last_event_id": None,
        "registered_at": None,
    }
    assert register(rivya, task_id, "order-1").status_code == 200
    assert register(rivya, task_id).status_code == 200
    assert register(rivya, task_id, "order-2").status_code == 409
    assert register(rivya, "").status_code == 400
    assert register(rivya, "task_x", "r" * 129).status_code == 400

    def record() -> Any:
        return rivya.admin(f"/records/{task_id}").json()

    wait_until(lambda: record()["reconcile_state"] == "running", timeout=20, what=record)
    assert record()["status"] == "processing"
    # No event of Rivya's yet: only the service's own, the balance at its threshold.
    events = rivya.admin("/events").json()["events"]
    assert [e["type"] for e in events] == ["receiver.credits.low"]

    fake_rivya.generations[task_id] = generation
    # The pass stores the event (the record turns succeeded), then marks the record asked
    # (completed), in a transaction of its own: wait for the second.
    wait_until(lambda: record()["reconcile_state"] == "completed", timeout=20, what=record)
    synthesized = f"reconciled:{task_id}:succeeded"
    done = record()
    assert (done["status"], done["last_event_id"]) == ("succeeded", synthesized)
    wait_until(lambda: len(sinks["everything"].received) == 1, timeout=20)
    wait_until(lambda: len(sinks["late"].received) == 1, timeout=20)
    (delivery,) = sinks["everything"].received
    payload = Webhook(keys["everything"]).verify(delivery.body, delivery.headers)
    assert payload["id"] == delivery.headers["webhook-id"] == synthesized
    assert (payload["type"], payload["source"], payload["data"]) == (
        "generation.succeeded",
        "reconciliation",
        generation,
    )

    assert rivya.send(event).json()["status"] == "accepted"
    assert rivya.admin(f"/events/{event['id']}").json()["outcome"] == "stale"
    assert record()["last_event_id"] == synthesized
    wait_until(lambda: sinks["late"].ids() == [synthesized, event["id"]], timeout=20)
    wait_until(
        lambda: rivya.admin("/deliveries?state=pending").json()["deliveries"] == [], timeout=20
    )
    assert sinks["everything"].ids() == [synthesized], "the result once, not again as stale"
    assert sinks["failures"].received == []
    stats = rivya.admin("/stats").json()
    assert stats["rivya_credits"]["current_credits"] == fake_rivya.credits
    assert all(call.authorized for call in fake_rivya.calls)
    for path in ("/stats", f"/records/{task_id}", "/records", "/events", f"/events/{synthesized}"):
        assert fake_rivya.key not in rivya.admin(path).text
    gauges = metric(server, "receiver_rivya_credits") + metric(server, "receiver_records_stale")
    assert {"receiver_rivya_credits 1000.0", "receiver_rivya_credits_low 1.0"} <= set(gauges)
    assert "receiver_records_stale 0.0" in gauges
    assert '"event":"rivya_credits_low"' in server.output()
    assert 'receiver_reconcile_passes_total{result="ok"}' in " ".join(
        metric(server, "receiver_reconcile_passes_total")
    )


class Reconcile:
    """`receiver reconcile` run by an operator beside the server, every output checked for
    the API key."""

    def __init__(self, server: ReceiverProcess, api: FakeRivya) -> None:
        self.server, self.api = server, api

    def run(self, *args: str, code: int = 0, **env: str) -> Any:
        settings = self.server.env | {f"RECEIVER_{k.upper()}": v for k, v in env.items()}
        result = run_cli("reconcile", "--json", *args, env=settings, cwd=self.server.workdir)
        assert self.api.key not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert result.returncode == code, result.stderr
        return orjson.loads(result.stdout) if code == 0 else result.stderr


@pytest.fixture
def operated(
    start_server: Callable[..., ReceiverProcess],
    fake_rivya: FakeRivya,
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
) -> Rivya:
    """A server whose own passes find nothing due for an hour: the operator drives them."""
    server = start_server(**reconciling(fake_rivya, reconcile_after_seconds="3600"))
    return Rivya(server, secrets_in_use[0], sensitive)


def test_each_failure_of_rivyas_api_is_handled_and_changes_nothing_it_should_not(
    operated: Rivya, fake_rivya: FakeRivya
) -> None:
    rivya, server = operated, operated.server
    reconcile = Reconcile(server, fake_rivya)
    known = make_event("generation.failed")["data"]
    fake_rivya.generations[known["id"]] = known
    for task_id in (known["id"], "task_unknown"):
        assert register(rivya, task_id).status_code == 201
    time.sleep(1)

    def record(task_id: str) -> Any:
        return rivya.admin(f"/records/{task_id}").json()

    # 401: the pass stops at once, in one line naming Rivya's code, and hands back nothing.
    refused = reconcile.run("--stale-after", "1s", code=1, rivya_api_key="rvya_sk_revoked")
    assert (
        refused.strip().splitlines()[-1] == "Error: the pass stopped: auth_failed (api_key_invalid)"
    )
    assert record(known["id"])["reconciled_at"] is None

    # 500 three times: unavailable after the retries; claims handed back.
    fake_rivya.scripted = [error(500, "internal") for _ in range(3)]
    reconcile.run("--stale-after", "1s", code=1)
    assert (record(known["id"])["reconciled_at"], record("task_unknown")["reconciled_at"]) == (
        None,
        None,
    )

    # 429 with Retry-After: asked again no sooner; then the pass completes both records.
    fake_rivya.scripted = [Answer(429, b"{}", {"retry-after": "1"})]
    report = reconcile.run("--stale-after", "1s")
    assert report | {"asked": 2, "changed": 1, "not_found": 1, "failed": 0} == report
    credit_calls = fake_rivya.calls_to("/api/v1/credits")[-2:]
    assert credit_calls[1].at - credit_calls[0].at >= 0.9
    assert record(known["id"]) | {"status": "failed", "reconcile_state": "completed"} == record(
        known["id"]
    )
    assert record("task_unknown")["reconcile_state"] == "not_found"

    # Not found is not asked again, unless forced.
    asked_before = len(fake_rivya.calls_to("/api/v1/generations/task_unknown"))
    time.sleep(1)
    assert reconcile.run("--stale-after", "1s")["asked"] == 0
    assert reconcile.run("--task", "task_unknown")["not_found"] == 1
    assert len(fake_rivya.calls_to("/api/v1/generations/task_unknown")) == asked_before + 1
    assert "no record" in reconcile.run("--task", "task_nowhere", code=1)
    # A record already final, asked about by force: nothing applies, no event repeats it.
    assert reconcile.run("--task", known["id"]) | {"asked": 1, "changed": 0} == reconcile.run(
        "--task", known["id"]
    )
    events = [e["id"] for e in rivya.admin("/events").json()["events"]]
    assert events == [f"reconciled:{known['id']}:failed"]

    # Malformed JSON: that record failed, the pass goes on, nothing changes.
    assert register(rivya, "task_garbled").status_code == 201
    fake_rivya.generations["task_garbled"] = running(known | {"id": "task_garbled"})
    time.sleep(1)
    fake_rivya.scripted = [Answer(200, b'{"current_credits": 5}'), Answer(200, b"{not json")]
    report = reconcile.run("--stale-after", "1s")
    assert (report["result"], report["failed"], report["credits"]) == ("ok", 1, 5)
    assert record("task_garbled") | {"status": "queued", "reconcile_state": "failed"} == record(
        "task_garbled"
    )
    assert reconcile.run("--dry-run", "--stale-after", "1h") == {"dry_run": True, "due": 0}


def test_answers_no_backend_can_store_fail_their_record_and_the_pass_goes_on(
    operated: Rivya, fake_rivya: FakeRivya
) -> None:
    """A time UTC cannot hold (it raised OverflowError and ended the pass) and a NUL in the
    model (PostgreSQL refused the row): each record is `failed` for the pass, unchanged, and
    the tasks after them are still asked about and completed."""
    rivya = operated
    answers = {
        "task_a_far_future": running(make_event()["data"])
        | {"updated_at": "9999-12-31T23:59:59-01:00"},
        "task_b_nul": make_event()["data"] | {"model": "z-\x00image"},
        "task_c_fine": make_event("generation.failed")["data"],
    }
    for task_id, answer in answers.items():  # claimed in this order: by change, then ID
        fake_rivya.generations[task_id] = answer | {"id": task_id}
        assert register(rivya, task_id).status_code == 201
    time.sleep(1)
    report = Reconcile(rivya.server, fake_rivya).run("--stale-after", "1s")
    assert report | {"result": "ok", "asked": 3, "changed": 1, "failed": 2} == report
    records = {task_id: rivya.admin(f"/records/{task_id}").json() for task_id in answers}
    assert {task_id: (r["status"], r["reconcile_state"]) for task_id, r in records.items()} == {
        "task_a_far_future": ("queued", "failed"),
        "task_b_nul": ("queued", "failed"),
        "task_c_fine": ("failed", "completed"),
    }
    events = [e["id"] for e in rivya.admin("/events").json()["events"]]
    assert events == ["reconciled:task_c_fine:failed"]


REFUSE_MODEL = {
    "sqlite": [
        "CREATE TRIGGER refuse_model BEFORE UPDATE ON records WHEN NEW.model = 'refused-model'"
        " BEGIN SELECT RAISE(ABORT, 'refused'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_model() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.model = 'refused-model' THEN RAISE EXCEPTION 'refused'"
        " USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER refuse_model BEFORE UPDATE ON records FOR EACH ROW"
        " EXECUTE FUNCTION refuse_model()",
    ],
}


def test_a_record_the_database_refuses_fails_alone_and_the_pass_goes_on(
    operated: Rivya, fake_rivya: FakeRivya, backend: str
) -> None:
    """Whatever else makes the database refuse one record's row (here a trigger, standing in
    for a constraint no parser can foresee): that record is `failed`, the next is completed;
    before, the error ended the pass, and every later pass at the same record."""
    rivya = operated
    for task_id, model in (("task_r_refused", "refused-model"), ("task_s_fine", "z-image")):
        fake_rivya.generations[task_id] = make_event()["data"] | {"id": task_id, "model": model}
        assert register(rivya, task_id).status_code == 201
    with reading(rivya.server.env["RECEIVER_DATABASE_URL"]) as db:
        for statement in REFUSE_MODEL[backend]:
            db.execute(sa.text(statement))
        db.commit()
    time.sleep(1)
    report = Reconcile(rivya.server, fake_rivya).run("--stale-after", "1s")
    assert report | {"result": "ok", "asked": 2, "changed": 1, "failed": 1} == report
    refused, fine = (rivya.admin(f"/records/{t}").json() for t in ("task_r_refused", "task_s_fine"))
    assert (refused["status"], refused["reconcile_state"]) == ("queued", "failed")
    assert (fine["status"], fine["reconcile_state"]) == ("succeeded", "completed")


def test_a_hanging_api_times_out_and_the_service_keeps_ingesting(
    start_server: Callable[..., ReceiverProcess],
    fake_rivya: FakeRivya,
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
) -> None:
    fake_rivya.hang = True
    server = start_server(
        **reconciling(fake_rivya, reconcile_after_seconds="1", reconcile_interval_seconds="0.2")
    )
    rivya = Rivya(server, secrets_in_use[0], sensitive)
    assert register(rivya, "task_waiting").status_code == 201
    wait_until(lambda: len(fake_rivya.calls) >= 2, timeout=20)
    for _ in range(10):
        started = time.monotonic()
        assert rivya.send(make_event()).json()["status"] == "accepted"
        assert time.monotonic() - started < 1
    wait_until(
        lambda: any(
            'result="unavailable"' in line for line in metric(server, "receiver_reconcile")
        ),
        timeout=30,
    )
    assert any('status="timeout"' in line for line in metric(server, "receiver_rivya_api"))
    assert metric(server, "receiver_records_stale ") == ["receiver_records_stale 1.0"]
    fake_rivya.hang = False
    wait_until(lambda: rivya.admin("/records/task_waiting").json()["reconcile_state"], timeout=30)


def test_passes_keep_to_the_configured_rate(operated: Rivya, fake_rivya: FakeRivya) -> None:
    rivya, server = operated, operated.server
    for number in range(8):
        fake_rivya.generations[f"task_{number}"] = running(make_event()["data"]) | {
            "id": f"task_{number}"
        }
        assert register(rivya, f"task_{number}").status_code == 201
    time.sleep(1)
    first = len(fake_rivya.calls)
    report = Reconcile(server, fake_rivya).run("--stale-after", "1s", rivya_api_rate="5")
    assert report["asked"] == 8
    times = [call.at for call in fake_rivya.calls[first:]]
    assert len(times) == 9  # the credits, then each task
    # 5 a second: 8 gaps of 0.2 s at least. Each arrival at the fake API may move by a few
    # ms of loopback timing, so the span is held to 1.5 s and no gap to under half its due.
    assert times[-1] - times[0] >= 1.5, times
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 0.1, gaps


def metric(server: ReceiverProcess, prefix: str) -> list[str]:
    return [
        line
        for line in HTTP.get(
            f"{server.url}/metrics", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
        ).text.splitlines()
        if line.startswith(prefix)
    ]


def test_a_worker_runs_passes_too(
    start_server: Callable[..., ReceiverProcess], fake_rivya: FakeRivya, downstream: Downstream
) -> None:
    worker = start_server(
        "worker",
        **reconciling(fake_rivya, reconcile_after_seconds="1", reconcile_interval_seconds="0.3"),
    )
    wait_until(lambda: '"event":"reconciler_started"' in worker.output(), timeout=10)
    operator = Operator(worker)
    generation = make_event("generation.failed")["data"]
    fake_rivya.generations[generation["id"]] = generation
    operator.json("tasks", "register", generation["id"])
    wait_until(
        lambda: operator.json("records", "show", generation["id"])["status"] == "failed",
        timeout=30,
    )
    synthesized = f"reconciled:{generation['id']}:failed"
    wait_until(lambda: synthesized in downstream.ids(), timeout=30)


def test_an_administrator_asks_rivya_about_one_task_from_the_console(
    operated: Rivya, fake_rivya: FakeRivya
) -> None:
    generation = make_event()["data"]
    fake_rivya.generations[generation["id"]] = generation
    assert register(operated, generation["id"]).status_code == 201
    console = Browser(operated.server.url)
    try:
        console.sign_in()
        page = f"/console/records/{generation['id']}"
        assert "Ask Rivya about this task now" in console.get(page).text
        asked = console.post(
            "/console/records/reconcile", csrf=console.csrf(page), task_id=generation["id"]
        )
        location = asked.headers["location"]
        assert location.startswith(f"{page}?done=reconciled&signed=")
        assert "Rivya was asked about this task." in console.client.get(location).text
    finally:
        console.client.close()
    assert operated.admin(f"/records/{generation['id']}").json()["status"] == "succeeded"
    assert '"who":"console","what":"reconcile"' in operated.server.output().replace(" ", "")
