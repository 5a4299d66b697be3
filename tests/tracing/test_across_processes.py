"""One trace from the request that stored an event to the attempts that deliver it, when they
run in another process: `receiver serve --no-forwarder` stores, a separate `receiver worker`
delivers, both exporting to the module's collector, on each backend. The trace survives the
worker not running when the event is stored, and a restart between two attempts; an event
stored untraced is delivered in a trace of its own."""

import secrets
import signal
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from receiver.tracing.carriers import MAX_TRACESTATE_CHARS
from tests.databases import reading
from tests.helpers import (
    ANSWER_200,
    Downstream,
    Received,
    ReceiverProcess,
    Respond,
    make_event,
    wait_until,
)
from tests.otlp_collector import CLIENT, SERVER, CollectedSpan, Collector
from tests.tracing.traces import (
    DELIVER,
    INGEST,
    RivyaAt,
    StartDownstream,
    StartServer,
    attempts_of,
    logged_span,
    of_event,
    send_traced,
    traceparent_parts,
)

# `serve_and_worker`'s: a server that stores, a worker that delivers, and their subscriber.
Deployment = tuple[ReceiverProcess, ReceiverProcess, Downstream]


def stored_by(collector: Collector, event_id: str) -> CollectedSpan:
    """The server span of the request that stored `event_id`."""
    (span,) = collector.wait_for(INGEST, **of_event(event_id))
    assert span.kind == SERVER
    assert span.attributes["receiver.outcome"] == "accepted"
    return span


@pytest.fixture
def serve_and_worker(
    start_server: StartServer, own_downstream: StartDownstream
) -> Callable[..., Deployment]:
    """`serve --no-forwarder` and a `worker` of the test's own, delivering to a subscriber of
    the test's own that answers as `respond` says; both with the settings given by keyword."""

    def start(respond: Respond = ANSWER_200, **settings: str) -> Deployment:
        sink = own_downstream(respond)
        settings = {"forward_url": sink.url, **settings}
        server = start_server("serve", "--no-forwarder", **settings)
        return server, start_server("worker", **settings), sink

    return start


def test_a_worker_process_delivers_in_the_trace_of_the_request_that_stored_the_event(
    start_server: StartServer, collector: Collector, downstream: Downstream, rivya_at: RivyaAt
) -> None:
    """serve --no-forwarder stores, a separate worker delivers: the worker's attempt span
    (same service name) is a child of the ingest server span, and the subscriber's
    `traceparent` names that trace and the attempt span as its parent."""
    server = start_server("serve", "--no-forwarder")
    worker = start_server("worker")
    event = make_event()
    assert rivya_at(server).send(event).status_code == 200

    ingest = stored_by(collector, event["id"])
    (attempt,) = attempts_of(collector, event["id"])
    assert attempt.kind == CLIENT
    assert (attempt.trace_id, attempt.parent_span_id) == (ingest.trace_id, ingest.span_id)
    assert attempt.service_name == ingest.service_name == "rivya-receiver"
    assert attempt.attributes["receiver.delivery.attempt"] == 1
    assert attempt.attributes["receiver.delivery.state"] == "delivered"
    assert attempt.attributes["http.response.status_code"] == 200
    assert logged_span(worker, attempt), "the attempt span is the worker's"
    assert not logged_span(server, attempt)

    (received,) = downstream.of(event["id"])
    assert traceparent_parts(received.headers["traceparent"]) == (
        ingest.trace_id,
        attempt.span_id,
        True,
    )


def test_an_event_stored_while_no_worker_runs_is_delivered_later_in_its_own_trace(
    start_server: StartServer, collector: Collector, downstream: Downstream, rivya_at: RivyaAt
) -> None:
    """A worker started and stopped; the event stored by a server that then stops too; a
    worker started again afterwards: its attempt is still a child of the server span that
    stored the event (the context came from the database, not from any process's memory)."""
    worker = start_server("worker")
    worker.stop()
    server = start_server("serve", "--no-forwarder")
    event = make_event()
    assert rivya_at(server).send(event).status_code == 200
    ingest = stored_by(collector, event["id"])
    server.stop()
    assert downstream.of(event["id"]) == []
    assert all(
        span.attributes["receiver.event_id"] != event["id"] for span in collector.named(DELIVER)
    )

    worker.start()
    (attempt,) = attempts_of(collector, event["id"])
    assert (attempt.trace_id, attempt.parent_span_id) == (ingest.trace_id, ingest.span_id)
    (received,) = downstream.of(event["id"])
    assert traceparent_parts(received.headers["traceparent"])[:2] == (
        ingest.trace_id,
        attempt.span_id,
    )


def test_a_retry_by_a_restarted_worker_is_still_a_child_of_the_request_that_stored_the_event(
    serve_and_worker: Callable[..., Deployment], collector: Collector, rivya_at: RivyaAt
) -> None:
    """The subscriber refuses the first attempt; the worker that made it is stopped before
    the retry is due, and another worker process makes the retry: both attempt spans are
    children of the ingest server span, each the parent named in its own request's
    `traceparent`."""
    # The retry is due 3 s after the refusal: time enough to stop the first worker first.
    server, worker, sink = serve_and_worker(
        lambda _, earlier: (503 if earlier == 0 else 200, {}), forward_retry_schedule="3,3"
    )
    event = make_event()
    assert rivya_at(server).send(event).status_code == 200
    ingest = stored_by(collector, event["id"])
    (first,) = attempts_of(collector, event["id"])
    worker.stop()
    assert len(sink.of(event["id"])) == 1, "the first worker made one attempt"

    restarted_at = len(worker.output())
    worker.start()
    first, second = attempts_of(collector, event["id"], count=2)
    assert (first.attributes["error.type"], first.attributes["receiver.delivery.state"]) == (
        "503",
        "pending",
    )
    assert second.attributes["receiver.delivery.state"] == "delivered"
    assert second.attributes["receiver.delivery.attempt"] == 2
    for attempt in (first, second):
        assert (attempt.trace_id, attempt.parent_span_id) == (ingest.trace_id, ingest.span_id)
    assert logged_span(worker, second, after=restarted_at), "the retry is the new process's"
    assert [
        traceparent_parts(received.headers["traceparent"])[:2] for received in sink.of(event["id"])
    ] == [(ingest.trace_id, first.span_id), (ingest.trace_id, second.span_id)]


def test_an_event_stored_with_tracing_off_is_delivered_as_the_root_of_a_new_trace(
    start_server: StartServer, collector: Collector, downstream: Downstream, rivya_at: RivyaAt
) -> None:
    """Stored by a server without OTEL_* variables, delivered by a traced worker: the attempt
    span has no parent (a trace of its own, not a broken reference), and the subscriber still
    gets a `traceparent` naming it."""
    start_server("worker")
    # An empty endpoint is none: tracing off, as without the variable.
    server = start_server("serve", "--no-forwarder", OTEL_EXPORTER_OTLP_ENDPOINT="")
    event = make_event()
    assert rivya_at(server).send(event).status_code == 200

    (attempt,) = attempts_of(collector, event["id"])
    assert attempt.parent_span_id == ""
    assert attempt.attributes["receiver.delivery.state"] == "delivered"
    assert all(
        span.attributes.get("receiver.event_id") != event["id"] for span in collector.named(INGEST)
    )
    (received,) = downstream.of(event["id"])
    assert traceparent_parts(received.headers["traceparent"]) == (
        attempt.trace_id,
        attempt.span_id,
        True,
    )
    assert '"trace_id"' not in server.output(), "the server traced nothing"


def test_a_trusted_callers_trace_and_tracestate_reach_the_subscriber_through_the_worker(
    start_server: StartServer, collector: Collector, downstream: Downstream, rivya_at: RivyaAt
) -> None:
    """With RECEIVER_TRACE_TRUST_INCOMING=true, a webhook's `traceparent` is the ingest span's
    parent, and its `tracestate`, stored with the event, goes with the worker's attempt to
    the subscriber; one over the 512 characters kept is dropped, the trace kept whole."""
    server = start_server("serve", "--no-forwarder", trace_trust_incoming="true")
    start_server("worker")
    rivya = rivya_at(server)
    states = {
        "short": "rivya=t61rcWkgMzE,other=1",
        "long": f"a={'x' * 250},b={'y' * 250},c={'z' * 40}",
    }
    assert len(states["long"]) > MAX_TRACESTATE_CHARS
    for which, state in states.items():
        caller = (secrets.token_hex(16), secrets.token_hex(8))
        event = make_event()
        send_traced(rivya, event, traceparent=f"00-{caller[0]}-{caller[1]}-01", tracestate=state)

        ingest = stored_by(collector, event["id"])
        assert (ingest.trace_id, ingest.parent_span_id) == caller
        (attempt,) = attempts_of(collector, event["id"])
        assert (attempt.trace_id, attempt.parent_span_id) == (caller[0], ingest.span_id)
        (received,) = downstream.of(event["id"])
        assert traceparent_parts(received.headers["traceparent"])[:2] == (
            caller[0],
            attempt.span_id,
        )
        sent = received.headers.get("tracestate")
        assert sent == (state if which == "short" else None), which


def test_an_ingest_not_sampled_leaves_its_delivery_unsampled_in_the_same_trace(
    start_server: StartServer, collector: Collector, downstream: Downstream, rivya_at: RivyaAt
) -> None:
    """The sampling decision made at ingest holds in the worker (its sampler follows the
    parent, as the default does): no span of the trace is exported, yet the subscriber's
    `traceparent` continues the stored trace, unsampled, and both processes' log lines
    carry its ID."""
    worker = start_server("worker", OTEL_TRACES_SAMPLER="parentbased_always_on")
    never = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
    server = start_server("serve", "--no-forwarder", **never)
    event = make_event()
    assert rivya_at(server).send(event).status_code == 200
    wait_until(lambda: len(downstream.of(event["id"])) == 1, timeout=15)

    (received,) = downstream.of(event["id"])
    trace_id, parent_id, sampled = traceparent_parts(received.headers["traceparent"])
    assert not sampled
    # Stopped, each process has exported all it would: nothing of this trace.
    worker.stop()
    server.stop()
    assert [span.name for span in collector.spans() if span.trace_id == trace_id] == []
    for process in (server, worker):
        assert f'"trace_id":"{trace_id}"' in process.output().replace(" ", ""), process.args
    assert f'"span_id":"{parent_id}"' in worker.output().replace(" ", "")


def test_a_stored_trace_context_that_no_longer_reads_starts_a_new_trace_and_delivers(
    start_server: StartServer, collector: Collector, downstream: Downstream, rivya_at: RivyaAt
) -> None:
    """Stored contexts edited under the service (an all-zero trace ID, the invalid version
    ff, 10,000 characters; test_serve.py has NULL and garbage): each event is still
    delivered, its attempt the root of a trace of its own; a valid `traceparent` beside an
    unreadable `tracestate` keeps its parent and sends no `tracestate`."""
    server = start_server("serve", "--no-forwarder")
    rivya = rivya_at(server)
    unreadable = {
        "zero trace": (f"00-{'0' * 32}-{'1' * 16}-01", None),
        "version ff": (f"ff-{'a' * 32}-{'b' * 16}-01", None),
        "oversized": ("0" * 10_000, "a=" + "b" * 10_000),
    }
    events = {which: make_event() for which in [*unreadable, "bad tracestate"]}
    for event in events.values():
        assert rivya.send(event).status_code == 200
    ingest = stored_by(collector, events["bad tracestate"]["id"])
    edits = [
        *((events[which]["id"], *context) for which, context in unreadable.items()),
        (events["bad tracestate"]["id"], None, "not a tracestate,,=="),
    ]
    with reading(server.env["RECEIVER_DATABASE_URL"]) as connection:
        for event_id, traceparent, tracestate in edits:
            connection.execute(
                sa.text(
                    "UPDATE events SET traceparent = COALESCE(:traceparent, traceparent),"
                    " tracestate = :tracestate WHERE id = :id"
                ),
                {"traceparent": traceparent, "tracestate": tracestate, "id": event_id},
            )
        connection.commit()

    start_server("worker")
    for which in unreadable:
        (attempt,) = attempts_of(collector, events[which]["id"])
        assert attempt.parent_span_id == "", which
        assert attempt.attributes["receiver.delivery.state"] == "delivered", which
        (received,) = downstream.of(events[which]["id"])
        assert traceparent_parts(received.headers["traceparent"])[:2] == (
            attempt.trace_id,
            attempt.span_id,
        )
    (attempt,) = attempts_of(collector, events["bad tracestate"]["id"])
    assert (attempt.trace_id, attempt.parent_span_id) == (ingest.trace_id, ingest.span_id)
    (received,) = downstream.of(events["bad tracestate"]["id"])
    assert "tracestate" not in received.headers


def test_an_attempt_by_a_worker_killed_mid_flight_is_made_again_under_the_same_ingest_span(
    serve_and_worker: Callable[..., Deployment], collector: Collector, rivya_at: RivyaAt
) -> None:
    """The worker is killed (SIGKILL) while the subscriber holds its first attempt: that span
    is lost with the process, and the next worker's attempt, once the lease has expired, is
    still a child of the ingest server span, named by the subscriber's second
    `traceparent`."""

    def slow_first(_: Received, earlier: int) -> tuple[int, dict[str, str]]:
        if earlier == 0:
            time.sleep(1.5)  # under the 2 s attempt timeout: the kill comes first
        return 200, {}

    server, worker, sink = serve_and_worker(slow_first)
    event = make_event()
    assert rivya_at(server).send(event).status_code == 200
    ingest = stored_by(collector, event["id"])
    wait_until(lambda: len(sink.of(event["id"])) == 1, timeout=15, what="the first attempt")
    worker.stop(signal.SIGKILL)

    worker.start()
    (attempt,) = attempts_of(collector, event["id"])
    assert (attempt.trace_id, attempt.parent_span_id) == (ingest.trace_id, ingest.span_id)
    assert attempt.attributes["receiver.delivery.state"] == "delivered"
    first, second = sink.of(event["id"])
    assert traceparent_parts(first.headers["traceparent"])[0] == ingest.trace_id
    assert traceparent_parts(second.headers["traceparent"])[:2] == (
        ingest.trace_id,
        attempt.span_id,
    )
