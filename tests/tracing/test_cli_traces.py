"""Operators' commands and the worker, traced as real processes on each backend:
`receiver replay` run with the OTEL_* variables is a "receiver.replay" span that the replayed
deliveries hang under (in another process, the worker's); run without them, each replayed
attempt starts a trace of its own, never under an invented parent; and a worker whose
collector refuses every export says so in its log by the time it stops."""

import re
from collections.abc import Callable

import pytest

from tests.helpers import Downstream, ReceiverProcess, make_event, run_cli, wait_until
from tests.otlp_collector import CLIENT, INTERNAL, CollectedSpan, Collector
from tests.tracing.traces import (
    DELIVER,
    INGEST,
    RivyaAt,
    StartCollector,
    StartDownstream,
    StartServer,
    of_event,
    traceparent_parts,
)

REPLAY = "receiver.replay"
# `deployment`'s: a server that stores, a worker that delivers, and their subscriber.
Deployment = tuple[ReceiverProcess, ReceiverProcess, Downstream]


@pytest.fixture
def deployment(
    start_server: StartServer, own_downstream: StartDownstream
) -> Callable[..., Deployment]:
    """`serve --no-forwarder` (traced, to the module's collector) and a `worker` with the
    OTEL_* overrides given, delivering to a subscriber of the test's own."""

    def start(**worker_otel: str) -> Deployment:
        sink = own_downstream()
        server = start_server("serve", "--no-forwarder", forward_url=sink.url)
        worker = start_server("worker", forward_url=sink.url, **worker_otel)
        return server, worker, sink

    return start


def delivered_once(
    collector: Collector, rivya_at: RivyaAt, server: ReceiverProcess, sink: Downstream
) -> tuple[str, CollectedSpan]:
    """An event stored by `server` and delivered once: its ID and its ingest span."""
    event = make_event()
    assert rivya_at(server).send(event).status_code == 200
    wait_until(lambda: len(sink.of(event["id"])) == 1, timeout=20, what="the first delivery")
    (ingest,) = collector.wait_for(INGEST, **of_event(event["id"]))
    return event["id"], ingest


def replay(server: ReceiverProcess, event_id: str, env: dict[str, str]) -> None:
    ran = run_cli("replay", event_id, "--yes", env=env, cwd=server.workdir)
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr


def untraced(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if not name.startswith("OTEL_")}


def replayed_traceparent(sink: Downstream, event_id: str) -> tuple[str, str, bool]:
    """The parts of the `traceparent` the subscriber got with the replayed (second) delivery
    of `event_id`, once it has arrived."""
    wait_until(lambda: len(sink.of(event_id)) == 2, timeout=20, what="the replayed delivery")
    return traceparent_parts(sink.of(event_id)[1].headers["traceparent"])


def replayed_attempt(collector: Collector, ingest: CollectedSpan) -> CollectedSpan:
    """The attempt span linked to `ingest` as its replay."""

    def found() -> list[CollectedSpan]:
        return [
            span
            for span in collector.named(DELIVER)
            if [(link.span_id, link.attributes) for link in span.links]
            == [(ingest.span_id, {"receiver.link": "replay_of"})]
        ]

    wait_until(lambda: bool(found()), timeout=20, what="the replayed attempt's span")
    (span,) = found()
    return span


def test_a_traced_cli_replay_is_the_parent_of_the_replayed_delivery_in_the_worker(
    collector: Collector, deployment: Callable[..., Deployment], rivya_at: RivyaAt
) -> None:
    """`receiver replay EVENT --yes` with the server's OTEL_* variables exports a root
    "receiver.replay" span before it exits; the worker's replayed attempt is its child,
    linked to the original ingest span, and the subscriber's traceparent continues it."""
    server, _, sink = deployment()
    event_id, ingest = delivered_once(collector, rivya_at, server, sink)

    replay(server, event_id, server.env)
    # Exported as the command exits: the collector has it once the command is done.
    (replayed,) = [
        span
        for span in collector.named(REPLAY)
        if span.span_id == replayed_attempt(collector, ingest).parent_span_id
    ]
    assert (replayed.kind, replayed.parent_span_id) == (INTERNAL, "")
    assert replayed.trace_id != ingest.trace_id
    assert replayed.attributes["receiver.who"] == "cli"

    attempt = replayed_attempt(collector, ingest)
    assert attempt.kind == CLIENT
    assert attempt.trace_id == replayed.trace_id
    assert replayed_traceparent(sink, event_id) == (replayed.trace_id, attempt.span_id, True)


def test_an_untraced_cli_replay_starts_each_attempt_in_a_trace_of_its_own(
    collector: Collector, deployment: Callable[..., Deployment], rivya_at: RivyaAt
) -> None:
    """Without the OTEL_* variables the replay has no span to give: the traced worker's
    replayed attempt is a root (no parent), linked to the original ingest span, in a new
    trace that the subscriber's traceparent names."""
    server, _, sink = deployment()
    event_id, ingest = delivered_once(collector, rivya_at, server, sink)

    replay(server, event_id, untraced(server.env))
    attempt = replayed_attempt(collector, ingest)
    assert attempt.parent_span_id == ""
    assert attempt.trace_id != ingest.trace_id
    assert replayed_traceparent(sink, event_id) == (attempt.trace_id, attempt.span_id, True)


def test_an_untraced_replay_under_a_zero_ratio_sampler_is_not_sampled(
    collector: Collector, deployment: Callable[..., Deployment], rivya_at: RivyaAt
) -> None:
    """A worker sampling new traces at ratio 0: the first attempt follows its sampled ingest
    parent, the untraced replay's attempt (a new trace) is not recorded, and the subscriber
    hears it unsampled: no parent invented with the sampled flag set."""
    server, _, sink = deployment(
        OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0"
    )
    event_id, ingest = delivered_once(collector, rivya_at, server, sink)
    (first,) = collector.wait_for(DELIVER, **of_event(event_id))
    assert first.parent_span_id == ingest.span_id

    replay(server, event_id, untraced(server.env))
    trace_id, _, sampled = replayed_traceparent(sink, event_id)
    assert not sampled
    assert trace_id != ingest.trace_id
    assert [span.span_id for span in collector.named(DELIVER) if span.trace_id == trace_id] == []


def test_a_worker_whose_collector_refuses_logs_its_dropped_spans_by_its_stop(
    collector: Collector,
    deployment: Callable[..., Deployment],
    own_collector: StartCollector,
    rivya_at: RivyaAt,
) -> None:
    """The worker serves no /metrics: its log is the only word of the spans it lost. A
    collector answering 500 to every export: a "trace_spans_dropped" warning with
    export_failed above 0, at the latest as it stops."""
    refusing = own_collector(500)
    server, worker, sink = deployment(
        OTEL_EXPORTER_OTLP_ENDPOINT=refusing.url, OTEL_EXPORTER_OTLP_TIMEOUT="1"
    )
    delivered_once(collector, rivya_at, server, sink)
    wait_until(lambda: refusing.exports > 0, timeout=20, what="an export refused")
    worker.stop()
    lines = [line for line in worker.output().splitlines() if "trace_spans_dropped" in line]
    counts = [int(found) for line in lines for found in re.findall(r'"export_failed":(\d+)', line)]
    assert max(counts, default=0) > 0, lines
