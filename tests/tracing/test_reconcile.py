"""Reconciliation's spans, from a real `receiver serve` asking the fake Rivya API on its own
interval, on each backend: a pass, its calls to Rivya and the synthesized event's storage and
delivery make one trace; a refused key or an unreachable API is told by the pass span's
result and error type, never by an exception's text, and the API key is in no span."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import SECRETS_OF_THE_RUN, Sensitive
from tests.console.conftest import Browser
from tests.fake_rivya import FakeRivya
from tests.helpers import Downstream, ReceiverProcess, free_port, make_event, run_cli, wait_until
from tests.otlp_collector import CLIENT, INTERNAL, SERVER, CollectedSpan, Collector
from tests.reconcile.conftest import reconciling, serve_fake_rivya
from tests.tracing.traces import RivyaAt, StartServer, attempts_of, logged_span, traceparent_parts

PASS_SPAN = "receiver.reconcile.pass"  # noqa: S105 - a span name, not a password
STORE_SPAN = "receiver.reconcile.store"
# Quick passes: a registered task is due a second after it was registered.
QUICK = {"reconcile_after_seconds": "1", "reconcile_interval_seconds": "0.3"}
# `ended_task`'s: the server it started and the task it registered there.
EndedTask = Callable[..., tuple[ReceiverProcess, str]]


@pytest.fixture
def fake_rivya(sensitive: Sensitive) -> Iterator[FakeRivya]:
    yield from serve_fake_rivya(sensitive)


@pytest.fixture
def ended_task(start_server: StartServer, fake_rivya: FakeRivya, rivya_at: RivyaAt) -> EndedTask:
    """A server of the test's own reconciling against `fake_rivya` (settings by keyword), and
    a task registered with it that Rivya reports ended as `event_type`."""

    def start(
        event_type: str = "generation.succeeded", **settings: str
    ) -> tuple[ReceiverProcess, str]:
        server = start_server(**reconciling(fake_rivya, **settings))
        event = make_event(event_type)
        task_id = event["data"]["id"]
        fake_rivya.generations[task_id] = event["data"]
        registered = rivya_at(server).admin("/tasks", method="POST", json={"task_id": task_id})
        assert registered.status_code == 201
        return server, task_id

    return start


def url_of(span: CollectedSpan) -> str:
    """A client span's URL, under the old HTTP conventions' name or the stable one's."""
    return str(span.attributes.get("http.url") or span.attributes.get("url.full"))


def status_of(span: CollectedSpan) -> Any:
    return span.attributes.get("http.status_code", span.attributes.get("http.response.status_code"))


def calls_in(collector: Collector, parent: CollectedSpan) -> list[CollectedSpan]:
    """The client spans of the calls to Rivya's API made within the pass `parent`."""
    return [
        span
        for span in collector.spans()
        if span.name == "GET" and span.parent_span_id == parent.span_id
    ]


def parent_of(collector: Collector, child: CollectedSpan) -> CollectedSpan:
    """The span `child` hangs under, once exported (a parent ends after its children)."""

    def parents() -> list[CollectedSpan]:
        wanted = (child.trace_id, child.parent_span_id)
        return [span for span in collector.spans() if (span.trace_id, span.span_id) == wanted]

    wait_until(lambda: bool(parents()), timeout=15, what=f"the parent of {child.name}")
    (found,) = parents()
    return found


def pass_asking(collector: Collector, api_url: str, result: str) -> CollectedSpan:
    """A pass with `result` that called the API at `api_url` (this test's: the module's
    collector has every test's passes, on each backend)."""

    def passes() -> list[CollectedSpan]:
        return [
            span
            for span in collector.named(PASS_SPAN)
            if span.attributes.get("receiver.reconcile.result") == result
            and any(url_of(call).startswith(api_url) for call in calls_in(collector, span))
        ]

    wait_until(lambda: bool(passes()), timeout=30, what=f"a pass that was {result}")
    return passes()[0]


def no_exception_text(collector: Collector) -> None:
    """Every span event named `exception` says the exception's class alone: its message
    (which may quote a URL, an answer, SQL parameters) and stack trace are never exported."""
    events = [
        attributes
        for span in collector.spans()
        for name, attributes in span.events
        if name == "exception"
    ]
    assert all(set(attributes) == {"exception.type"} for attributes in events), events


def no_authorization(collector: Collector, key: str) -> None:
    """Rivya's API key is in no span, and no span records an Authorization header at all."""
    for span in collector.spans():
        assert key not in span.text(), span.name
        keys = [
            *span.attributes,
            *(name for _, attributes in span.events for name in attributes),
            *(name for link in span.links for name in link.attributes),
        ]
        assert not [name for name in keys if "authorization" in name.lower()], span.name


def test_a_pass_its_calls_to_rivya_and_the_synthesized_events_delivery_are_one_trace(
    collector: Collector, downstream: Downstream, fake_rivya: FakeRivya, ended_task: EndedTask
) -> None:
    """A registered task Rivya reports ended: the pass span (a root: the service's own
    interval started it) has a "GET" client span for the credit balance and for the
    generation, and a receiver.reconcile.store child for the synthesized event, whose
    delivery attempt is a child of that store span; the subscriber's `traceparent` continues
    the same trace."""
    _, task_id = ended_task(**QUICK)
    synthesized = f"reconciled:{task_id}:succeeded"

    about_task: dict[str, Any] = {"receiver.task_id": task_id}
    (store,) = collector.wait_for(STORE_SPAN, timeout=20, **about_task)
    assert store.kind == INTERNAL
    assert store.attributes["receiver.event_id"] == synthesized
    assert store.attributes["receiver.outcome"] == "applied"
    found = parent_of(collector, store)
    assert found.name == PASS_SPAN
    assert found.parent_span_id == "", "a periodic pass starts its own trace"
    assert found.attributes["receiver.who"] == "reconciler"
    assert found.attributes["receiver.reconcile.result"] == "ok"
    assert found.attributes["receiver.reconcile.changed"] == 1

    calls = calls_in(collector, found)
    assert {call.kind for call in calls} == {CLIENT}
    assert sorted(url_of(call).removeprefix(fake_rivya.url) for call in calls) == [
        "/credits",
        f"/generations/{task_id}",
    ]
    assert {status_of(call) for call in calls} == {200}

    (attempt,) = attempts_of(collector, synthesized)
    assert (attempt.trace_id, attempt.parent_span_id) == (store.trace_id, store.span_id)
    assert attempt.attributes["receiver.delivery.state"] == "delivered"
    assert {span.trace_id for span in (found, *calls, store, attempt)} == {found.trace_id}
    (received,) = downstream.of(synthesized)
    assert traceparent_parts(received.headers["traceparent"])[:2] == (
        found.trace_id,
        attempt.span_id,
    )

    assert all(call.authorized for call in fake_rivya.calls)
    no_authorization(collector, fake_rivya.key)
    no_exception_text(collector)


def test_a_pass_rivya_refuses_says_auth_failed_with_the_error_type_and_no_exception_text(
    start_server: StartServer,
    collector: Collector,
    fake_rivya: FakeRivya,
    sensitive: Sensitive,
) -> None:
    """A key Rivya refuses (401): the pass span's result is auth_failed and its error.type
    Rivya's error code; the call's client span is its child with the 401; neither the key
    nor Rivya's error message is in any span."""
    wrong_key = f"rvya_sk_{'0' * 32}"
    for registry in (sensitive, SECRETS_OF_THE_RUN):
        registry.add(wrong_key)
    start_server(**reconciling(fake_rivya, rivya_api_key=wrong_key, **QUICK))

    refused = pass_asking(collector, fake_rivya.url, "auth_failed")
    assert refused.attributes["error.type"] == "api_key_invalid"
    assert refused.attributes["receiver.reconcile.asked"] == 0
    (call,) = calls_in(collector, refused)
    assert (url_of(call), status_of(call)) == (f"{fake_rivya.url}/credits", 401)
    assert not any(call.authorized for call in fake_rivya.calls)

    no_authorization(collector, wrong_key)
    no_exception_text(collector)
    assert not [span.name for span in collector.spans() if "as Rivya says it" in span.text()]


def test_a_pass_that_cannot_reach_rivya_records_only_the_exceptions_class(
    start_server: StartServer,
    collector: Collector,
    fake_rivya: FakeRivya,
) -> None:
    """Nothing listens where Rivya's API should be: the pass span says unavailable with an
    error type, each call's client span has an `exception` event with the class alone, and
    the connection error's message (which names the address) is in no span."""
    nowhere = f"http://127.0.0.1:{free_port()}/api/v1"
    start_server(**reconciling(fake_rivya, rivya_api_url=nowhere, **QUICK))

    failed = pass_asking(collector, nowhere, "unavailable")
    assert failed.attributes["error.type"]
    calls = calls_in(collector, failed)
    assert calls, "the pass's calls are its children"
    for call in calls:
        assert url_of(call) == f"{nowhere}/credits"
        (event,) = call.events
        assert event[0] == "exception"
        assert event[1]["exception.type"].startswith("aiohttp.client_exceptions.ClientConnector")
        assert ":" not in call.status_message, call.status_message
    no_exception_text(collector)
    leaked = ("Cannot connect", "Connect call failed", "Connection refused")
    assert not [span.name for span in collector.spans() if any(t in span.text() for t in leaked)]


def test_a_pass_run_by_the_cli_is_one_trace_with_the_delivery_the_server_makes(
    collector: Collector, fake_rivya: FakeRivya, ended_task: EndedTask
) -> None:
    """`receiver reconcile --task` in its own process, with the server's OTEL_* variables:
    its pass, calls and store spans reach the collector before it exits, and the server's
    forwarder, another process, delivers the synthesized event as a child of the CLI's
    store span."""
    server, task_id = ended_task("generation.failed", reconcile_after_seconds="3600")

    ran = run_cli("reconcile", "--json", "--task", task_id, env=server.env, cwd=server.workdir)
    assert ran.returncode == 0, ran.stderr
    assert fake_rivya.key not in ran.stdout + ran.stderr
    about_task: dict[str, Any] = {"receiver.task_id": task_id}
    (store,) = collector.wait_for(STORE_SPAN, **about_task)
    found = parent_of(collector, store)
    assert (found.name, found.parent_span_id) == (PASS_SPAN, "")
    assert found.attributes["receiver.who"] == "cli"
    assert sorted(
        url_of(call).removeprefix(fake_rivya.url) for call in calls_in(collector, found)
    ) == [
        "/credits",
        f"/generations/{task_id}",
    ]
    (attempt,) = attempts_of(collector, f"reconciled:{task_id}:failed")
    assert (attempt.trace_id, attempt.parent_span_id) == (store.trace_id, store.span_id)
    assert logged_span(server, attempt), "the server's forwarder made the attempt"
    no_authorization(collector, fake_rivya.key)


def test_a_pass_asked_for_from_the_console_hangs_under_the_consoles_request(
    collector: Collector, fake_rivya: FakeRivya, ended_task: EndedTask
) -> None:
    """ "Ask Rivya about this task now": the pass is a child of the console request's server
    span, and the synthesized event's delivery is in that same trace, under the store span."""
    server, task_id = ended_task(reconcile_after_seconds="3600")
    console = Browser(server.url)
    try:
        console.sign_in()
        page = f"/console/records/{task_id}"
        asked = console.post("/console/records/reconcile", csrf=console.csrf(page), task_id=task_id)
        assert asked.status_code == 303
    finally:
        console.client.close()

    about_task: dict[str, Any] = {"receiver.task_id": task_id}
    (store,) = collector.wait_for(STORE_SPAN, **about_task)
    found = parent_of(collector, store)
    assert (found.name, found.attributes["receiver.who"]) == (PASS_SPAN, "console")
    request = parent_of(collector, found)
    assert (request.name, request.kind) == ("POST /console/records/reconcile", SERVER)
    (attempt,) = attempts_of(collector, f"reconciled:{task_id}:succeeded")
    assert (attempt.trace_id, attempt.parent_span_id) == (request.trace_id, store.span_id)
    no_authorization(collector, fake_rivya.key)
