"""Answers from Rivya's API that are not what it documents: the wrong shape, a generation of
another task, an unreadable balance, a 403, an answer too large to read. Each fails what it
concerns and nothing else; the pass goes on, or (a refused key) stops and hands back its
claims."""

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from receiver.reconcile.rivya_api import (
    MAX_ANSWER_BYTES,
    RivyaAPI,
    RivyaAuthError,
    RivyaResponseError,
)
from tests.conftest import Rivya, Sensitive
from tests.fake_rivya import Answer, FakeRivya, error
from tests.helpers import ReceiverProcess, make_event
from tests.reconcile.conftest import reconciling
from tests.reconcile.test_reconciler import Reconcile, register, running

# Over the cap, with the first bytes a valid start: only a read that stops at the cap refuses.
OVERSIZED = b'{"id": "task_big", "padding": "' + b"a" * (2 * MAX_ANSWER_BYTES) + b'"}'


@pytest.fixture
def operated(
    start_server: Callable[..., ReceiverProcess],
    fake_rivya: FakeRivya,
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
) -> tuple[Rivya, Reconcile]:
    """A server whose own passes find nothing due for an hour; the operator runs them."""
    server = start_server(**reconciling(fake_rivya, reconcile_after_seconds="3600"))
    return Rivya(server, secrets_in_use[0], sensitive), Reconcile(server, fake_rivya)


def record(rivya: Rivya, task_id: str) -> Any:
    return rivya.admin(f"/records/{task_id}").json()


async def ask(api: FakeRivya, call: Callable[[RivyaAPI], Any]) -> Any:
    async with RivyaAPI(api.url, SecretStr(api.key), rate=50, timeout_seconds=2) as client:
        return await call(client)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"[]", "not_an_object"),
        (b'"a string"', "not_an_object"),
        (b"null", "not_an_object"),
        (b"{not json", "invalid_json"),
        (OVERSIZED, "answer_too_large"),
    ],
)
async def test_a_generation_answer_that_is_not_a_json_object_is_a_response_error(
    fake_rivya: FakeRivya, body: bytes, code: str
) -> None:
    fake_rivya.answers["task_odd"] = Answer(200, body)
    with pytest.raises(RivyaResponseError) as refused:
        await ask(fake_rivya, lambda client: client.generation("task_odd"))
    assert refused.value.code == code


@pytest.mark.anyio
async def test_an_answer_of_many_chunks_under_the_cap_is_read_whole(
    fake_rivya: FakeRivya,
) -> None:
    """A generation with 2,000 result URLs (about 240 KB): once read as its first chunk
    alone, and refused as broken JSON."""
    generation = make_event()["data"]
    urls = [f"https://media.example/{number:04}/{'a' * 100}.png" for number in range(2000)]
    generation["result"] = {"primary_url": urls[0], "urls": urls}
    body = orjson.dumps(generation)
    assert 200_000 < len(body) < MAX_ANSWER_BYTES
    fake_rivya.answers[generation["id"]] = Answer(200, body)
    answer = await ask(fake_rivya, lambda client: client.generation(generation["id"]))
    assert answer == generation


@pytest.mark.anyio
@pytest.mark.parametrize(
    "balance",
    [b'{"current_credits": "1000"}', b'{"current_credits": true}', b'{"current_credits": 1.5}',
     b'{"current_credits": null}', b"{}", b"[1000]", b"1000", OVERSIZED],
)  # fmt: skip
async def test_an_unreadable_balance_is_a_response_error(
    fake_rivya: FakeRivya, balance: bytes
) -> None:
    fake_rivya.scripted = [Answer(200, balance)]
    with pytest.raises(RivyaResponseError):
        await ask(fake_rivya, lambda client: client.credits())


@pytest.mark.anyio
async def test_a_403_is_a_refused_key_with_rivyas_code_and_is_not_retried(
    fake_rivya: FakeRivya,
) -> None:
    fake_rivya.scripted = [error(403, "insufficient_scope")]
    with pytest.raises(RivyaAuthError) as refused:
        await ask(fake_rivya, lambda client: client.generation("task_x"))
    assert refused.value.code == "insufficient_scope"
    assert len(fake_rivya.calls) == 1


@pytest.mark.anyio
async def test_an_oversized_error_answer_is_read_no_further_than_the_cap(
    fake_rivya: FakeRivya,
) -> None:
    """A 403 whose body is over the cap: still a refused key, with no code read from it."""
    fake_rivya.scripted = [Answer(403, b'{"error": {"code": "x' + b"x" * 2 * MAX_ANSWER_BYTES)]
    with pytest.raises(RivyaAuthError) as refused:
        await ask(fake_rivya, lambda client: client.credits())
    assert refused.value.code == "http_403"


def test_an_answer_naming_another_task_fails_that_record_and_changes_no_other(
    operated: tuple[Rivya, Reconcile], fake_rivya: FakeRivya
) -> None:
    rivya, reconcile = operated
    asked, other = make_event()["data"], make_event()["data"]
    for generation in (asked, other):
        assert register(rivya, generation["id"]).status_code == 201
    fake_rivya.generations[other["id"]] = running(other)
    # Asked about one task, Rivya answers with the other's generation, succeeded.
    fake_rivya.answers[asked["id"]] = Answer(200, orjson.dumps(other))
    report = reconcile.run("--task", asked["id"])
    assert report | {"result": "ok", "asked": 1, "changed": 0, "failed": 1} == report
    assert record(rivya, asked["id"]) | {"status": "queued", "reconcile_state": "failed"} == (
        record(rivya, asked["id"])
    )
    untouched = record(rivya, other["id"])
    assert (untouched["status"], untouched["reconcile_state"]) == ("queued", None)
    assert rivya.admin("/events").json()["events"] == [], "no event synthesized for either"


def test_answers_of_the_wrong_shape_fail_their_records_and_the_pass_goes_on(
    operated: tuple[Rivya, Reconcile], fake_rivya: FakeRivya
) -> None:
    rivya, reconcile = operated
    good = make_event("generation.failed")["data"]
    fake_rivya.generations[good["id"]] = good
    odd = {
        "task_list": Answer(200, b"[]"),
        "task_status_number": Answer(
            200, orjson.dumps(good | {"id": "task_status_number", "status": 5})
        ),
        "task_big": Answer(200, OVERSIZED),
        "task_no_fields": Answer(200, b'{"id": "task_no_fields"}'),
    }
    fake_rivya.answers.update(odd)
    asked = (good["id"], *odd)
    for task_id in asked:
        assert register(rivya, task_id).status_code == 201
    report = reconcile.run(*(f"--task={task_id}" for task_id in asked))
    assert report | {"result": "ok", "asked": 5, "changed": 1, "failed": 4} == report
    assert record(rivya, good["id"])["status"] == "failed"
    for task_id in odd:
        assert record(rivya, task_id) | {"status": "queued", "reconcile_state": "failed"} == (
            record(rivya, task_id)
        ), task_id
    events = [event["id"] for event in rivya.admin("/events").json()["events"]]
    assert events == [f"reconciled:{good['id']}:failed"]


def test_an_unreadable_balance_keeps_the_last_one_and_the_pass_goes_on(
    operated: tuple[Rivya, Reconcile], fake_rivya: FakeRivya
) -> None:
    rivya, reconcile = operated
    generation = make_event()["data"]
    fake_rivya.generations[generation["id"]] = generation
    fake_rivya.credits = 700
    assert reconcile.run("--stale-after", "1h")["credits"] == 700
    assert register(rivya, generation["id"]).status_code == 201
    fake_rivya.scripted = [Answer(200, b'{"current_credits": "lots"}')]
    report = reconcile.run("--task", generation["id"])
    assert report | {"result": "ok", "credits": None, "asked": 1, "changed": 1} == report
    assert rivya.admin("/stats").json()["rivya_credits"]["current_credits"] == 700
    assert record(rivya, generation["id"])["status"] == "succeeded"


def test_a_403_stops_the_pass_and_hands_back_every_claim(
    operated: tuple[Rivya, Reconcile], fake_rivya: FakeRivya
) -> None:
    rivya, reconcile = operated
    generation = make_event()["data"]
    fake_rivya.generations[generation["id"]] = generation
    assert register(rivya, generation["id"]).status_code == 201
    fake_rivya.scripted = [error(403, "insufficient_scope")]
    refused = reconcile.run("--task", generation["id"], code=1)
    assert refused.strip().splitlines()[-1] == (
        "Error: the pass stopped: auth_failed (insufficient_scope)"
    )
    assert record(rivya, generation["id"]) | {"status": "queued", "reconciled_at": None} == (
        record(rivya, generation["id"])
    )
    assert reconcile.run("--task", generation["id"])["changed"] == 1
