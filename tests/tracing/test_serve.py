"""One trace through `receiver serve`, read at a real OTLP/HTTP collector: from Rivya's
request, through the group commit, to every delivery attempt a real sink receives."""

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from standardwebhooks import Webhook

from tests.conftest import ADMIN_TOKEN, Rivya, Sensitive
from tests.databases import reading
from tests.helpers import (
    HTTP,
    Downstream,
    Received,
    ReceiverProcess,
    make_event,
    only,
    sign,
    wait_until,
    write_destinations,
)
from tests.otlp_collector import CLIENT, SERVER, CollectedSpan, Collector
from tests.tracing.traces import DELIVER, INGEST, StartDownstream, StartServer, send_traced

BATCH = "receiver.store.batch"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
ERROR = Status.StatusCode.STATUS_CODE_ERROR
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
# Seconds to wait for a span: a batch leaves every 100 ms, so this is a loaded machine's margin.
WAIT = 15.0
ADMIN_EVENT = "GET /admin/events/{event_id:path}"


def new_traceparent() -> tuple[str, str, str]:
    """A caller's own `traceparent`, with its trace and span IDs."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def sent_in_a_trace(rivya: Rivya, tracestate: str) -> tuple[dict[str, Any], str, str]:
    """A new event, sent with a caller's own `traceparent` and `tracestate`: the event, and
    the caller's trace and span IDs."""
    event = make_event()
    traceparent, trace_id, span_id = new_traceparent()
    send_traced(rivya, event, traceparent=traceparent, tracestate=tracestate)
    return event, trace_id, span_id


def http_status(span: CollectedSpan) -> int:
    """The answer's status, by the old conventions (the default) or the stable ones."""
    attributes = span.attributes
    return int(attributes.get("http.status_code", attributes.get("http.response.status_code", 0)))


@pytest.fixture
def trusting(start_server: StartServer, rivya: Rivya) -> Rivya:
    """Rivya, sending to a server of the test's own that trusts an incoming `traceparent`."""
    return Rivya(start_server(trace_trust_incoming="true"), rivya.secret, rivya.sensitive)


def ingest_of(collector: Collector, event_id: str) -> CollectedSpan:
    (span,) = collector.wait_for(INGEST, 1, WAIT, **{"receiver.event_id": event_id})
    return span


def deliveries_of(collector: Collector, event_id: str, count: int = 1) -> list[CollectedSpan]:
    spans = collector.wait_for(DELIVER, count, WAIT, **{"receiver.event_id": event_id})
    assert len(spans) == count, [span.attributes for span in spans]
    return sorted(spans, key=lambda span: span.attributes["receiver.delivery.attempt"])


def one_span(
    collector: Collector, matches: Callable[[CollectedSpan], bool], what: str
) -> CollectedSpan:
    """The one span that `matches`, once it has arrived."""
    found: list[CollectedSpan] = []

    def arrived() -> bool:
        found[:] = [span for span in collector.spans() if matches(span)]
        return bool(found)

    wait_until(arrived, timeout=WAIT, what=what)
    (span,) = found
    return span


def linked_from(collector: Collector, trace_id: str) -> CollectedSpan:
    """The server span that kept the incoming `traceparent` of `trace_id` as its link."""
    return one_span(
        collector,
        lambda span: span.name == INGEST and any(link.trace_id == trace_id for link in span.links),
        f"a server span linked to trace {trace_id}",
    )


def child(collector: Collector, parent: CollectedSpan, name: str) -> CollectedSpan:
    return one_span(
        collector,
        lambda span: (
            (span.name, span.trace_id, span.parent_span_id)
            == (name, parent.trace_id, parent.span_id)
        ),
        f"{name} under {parent.name}",
    )


def received(
    sink: Downstream, event_id: str, sensitive: Sensitive, count: int = 1
) -> list[Received]:
    """What the sink got for the event, its signatures registered as never to be in a span."""
    wait_until(lambda: len(sink.of(event_id)) >= count, timeout=WAIT, what=f"{event_id} at sink")
    sent = sink.of(event_id)
    sensitive.add(*(request.headers["webhook-signature"] for request in sent))
    return sent


def log_lines(server: ReceiverProcess, event: str) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def test_the_admin_api_names_the_trace_that_stored_an_event(
    collector: Collector, rivya: Rivya
) -> None:
    """An operator starts from the event: its admin view gives the trace ID to open, the
    ingest span's, which the event's deliveries hang under."""
    event = make_event()
    assert rivya.send(event).status_code == 200
    ingest = ingest_of(collector, event["id"])
    shown = rivya.admin(f"/events/{event['id']}").json()
    assert shown["trace_id"] == ingest.trace_id
    assert "traceparent" not in shown
    assert "tracestate" not in shown


def test_a_forwarded_event_is_one_trace_from_request_to_delivery(
    collector: Collector, rivya: Rivya, downstream: Downstream, forward_secret: str
) -> None:
    """Server span (status, outcome, event), its verify and store.wait children, the batch
    span linked to it, the attempt's client span its child; the sink's traceparent names
    that trace and attempt, and the delivery's signature still verifies."""
    event = make_event()
    assert rivya.send(event).status_code == 200

    ingest = ingest_of(collector, event["id"])
    assert ingest.kind == SERVER
    assert ingest.service_name == "rivya-receiver"
    assert http_status(ingest) == 200
    assert ingest.attributes["receiver.outcome"] == "accepted"
    assert ingest.attributes["receiver.event_type"] == event["type"]
    assert ingest.attributes["http.route"] == "/webhooks/rivya"
    assert ingest.parent_span_id == ""
    child(collector, ingest, "receiver.verify")
    child(collector, ingest, "receiver.store.wait")

    batch = one_span(
        collector,
        lambda span: (
            span.name == BATCH
            and any(
                (link.trace_id, link.span_id) == (ingest.trace_id, ingest.span_id)
                for link in span.links
            )
        ),
        "the batch span linked to the request",
    )
    assert batch.trace_id != ingest.trace_id, "a batch serves many requests: a trace of its own"
    assert batch.attributes["receiver.batch.rows"] >= 1
    assert batch.attributes["receiver.batch.commit_ms"] >= 0

    (deliver,) = deliveries_of(collector, event["id"])
    assert deliver.kind == CLIENT
    assert (deliver.trace_id, deliver.parent_span_id) == (ingest.trace_id, ingest.span_id)
    assert deliver.attributes["receiver.delivery.state"] == "delivered"
    assert deliver.attributes["receiver.delivery.attempt"] == 1
    assert deliver.attributes["http.response.status_code"] == 200
    assert deliver.attributes["receiver.destination"] == "default"

    (sent,) = received(downstream, event["id"], rivya.sensitive)
    version, trace_id, parent_id, flags = sent.headers["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", ingest.trace_id, deliver.span_id)
    assert int(flags, 16) & 1, "sampled"
    assert Webhook(forward_secret).verify(sent.body, sent.headers)["id"] == event["id"]


@pytest.mark.any_backend  # the request's span, before anything is stored
def test_an_untrusted_incoming_traceparent_is_a_link_not_the_parent(
    collector: Collector, rivya: Rivya, downstream: Downstream
) -> None:
    event, trace_id, span_id = sent_in_a_trace(rivya, "rivya=t61rcWkgMzE")

    ingest = ingest_of(collector, event["id"])
    assert ingest.trace_id != trace_id
    assert ingest.parent_span_id == ""
    assert [(link.trace_id, link.span_id, link.attributes) for link in ingest.links] == [
        (trace_id, span_id, {"receiver.link": "untrusted_traceparent"})
    ]
    (deliver,) = deliveries_of(collector, event["id"])
    assert (deliver.trace_id, deliver.parent_span_id) == (ingest.trace_id, ingest.span_id)
    (sent,) = received(downstream, event["id"], rivya.sensitive)
    assert sent.headers["traceparent"].startswith(f"00-{ingest.trace_id}-{deliver.span_id}-")
    assert "tracestate" not in sent.headers, "an untrusted caller's tracestate is not ours"


@pytest.mark.any_backend  # the request's span, before anything is stored
@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        f"00-{'0' * 32}-{'1' * 16}-01",  # the all-zero trace ID is invalid
        f"00-{'1' * 32}-{'0' * 16}-01",  # so is the all-zero span ID
        f"ff-{'1' * 32}-{'1' * 16}-01",  # version ff is forbidden
        f"00-{'1' * 32}-{'1' * 16}-01-extra",
        f"00-{'A' * 32}-{'1' * 16}-01",  # upper case is not W3C's
        "00-" + "1" * 5000,
    ],
    ids=["garbage", "zero-trace", "zero-span", "version-ff", "extra", "upper", "long"],
)
def test_a_malformed_incoming_traceparent_is_ignored(
    collector: Collector, rivya: Rivya, traceparent: str
) -> None:
    event = make_event()
    send_traced(rivya, event, traceparent=traceparent)
    ingest = ingest_of(collector, event["id"])
    assert ingest.links == []
    assert ingest.parent_span_id == ""
    (deliver,) = deliveries_of(collector, event["id"])
    assert deliver.parent_span_id == ingest.span_id


def test_a_trusted_incoming_traceparent_is_the_parent_of_ingest_and_delivery(
    collector: Collector, trusting: Rivya, downstream: Downstream
) -> None:
    event, trace_id, span_id = sent_in_a_trace(trusting, "rivya=t61rcWkgMzE,other=1")

    ingest = ingest_of(collector, event["id"])
    assert (ingest.trace_id, ingest.parent_span_id) == (trace_id, span_id)
    assert ingest.links == []
    (deliver,) = deliveries_of(collector, event["id"])
    assert (deliver.trace_id, deliver.parent_span_id) == (trace_id, ingest.span_id)
    (sent,) = received(downstream, event["id"], trusting.sensitive)
    assert sent.headers["traceparent"].startswith(f"00-{trace_id}-{deliver.span_id}-")
    assert sent.headers["tracestate"] == "rivya=t61rcWkgMzE,other=1"

    # Trusted, a malformed one is ignored as well: a trace of our own.
    unparented = make_event()
    send_traced(trusting, unparented, traceparent="00-garbage")
    ours = ingest_of(collector, unparented["id"])
    assert (ours.parent_span_id, ours.links) == ("", [])


def test_a_trusted_tracestate_too_long_to_store_is_dropped_and_the_trace_kept(
    collector: Collector, trusting: Rivya, downstream: Downstream
) -> None:
    """32 members of 20 characters: valid W3C, over the 512 characters an event keeps."""
    tracestate = ",".join(f"k{index:02}={'v' * 16}" for index in range(32))
    event, trace_id, _ = sent_in_a_trace(trusting, tracestate)

    ingest = ingest_of(collector, event["id"])
    (deliver,) = deliveries_of(collector, event["id"])
    assert (deliver.trace_id, deliver.parent_span_id) == (trace_id, ingest.span_id)
    (sent,) = received(downstream, event["id"], trusting.sensitive)
    assert sent.headers["traceparent"].startswith(f"00-{trace_id}-{deliver.span_id}-")
    assert "tracestate" not in sent.headers


@pytest.mark.any_backend  # refused before anything is stored
@pytest.mark.parametrize(
    ("refusal", "error_type", "status"),
    [
        ("wrong-secret", "NoMatchingSignatureError", 401),
        ("stale", "TimestampOutOfToleranceError", 401),
        ("unsigned", "MissingHeaderError", 401),
        ("too-large", "PayloadTooLargeError", 413),
        ("not-json", "UnsupportedMediaTypeError", 415),
    ],
)
def test_a_refused_webhook_is_a_rejected_server_span_with_no_batch_or_delivery(
    collector: Collector,
    rivya: Rivya,
    new_secrets: Callable[[], str],
    refusal: str,
    error_type: str,
    status: int,
) -> None:
    # Over the suite's RECEIVER_MAX_BODY_BYTES (64 KiB) when it is to be too large.
    event = make_event(data={"pad": "x" * 70_000}) if refusal == "too-large" else make_event()
    body = orjson.dumps(event)
    headers = sign(rivya.secret, body, event["id"])
    if refusal == "wrong-secret":
        headers = sign(new_secrets(), body, event["id"])
    elif refusal == "stale":
        headers = sign(rivya.secret, body, event["id"], datetime.now(UTC) - timedelta(hours=1))
    elif refusal == "unsigned":
        headers = {"content-type": "application/json"}
    elif refusal == "not-json":
        headers["content-type"] = "text/plain"
    # The incoming traceparent, kept as a link, tells this request's span from the others.
    traceparent, trace_id, _ = new_traceparent()
    answer = rivya.post(body, {**headers, "traceparent": traceparent})
    assert answer.status_code == status

    refused = linked_from(collector, trace_id)
    assert refused.attributes["receiver.outcome"] == "rejected"
    assert refused.attributes["error.type"] == error_type
    assert http_status(refused) == status
    # A later event's batch and delivery have arrived, so this one's would have too.
    later = make_event()
    assert rivya.send(later).status_code == 200
    deliveries_of(collector, later["id"])
    assert not [
        span
        for span in collector.named(DELIVER)
        if span.attributes["receiver.event_id"] == event["id"]
    ]
    assert not [
        span
        for span in collector.named(BATCH)
        if any(link.span_id == refused.span_id for link in span.links)
    ]
    # In its trace, nothing but the failed verification of a refused signature.
    in_its_trace = [span for span in collector.spans() if span.trace_id == refused.trace_id]
    verified = [("receiver.verify", refused.span_id, ERROR)] if status == 401 else []
    assert [
        (span.name, span.parent_span_id, span.status_code)
        for span in in_its_trace
        if span is not refused
    ] == verified


@pytest.mark.any_backend  # span names, whichever database answers
def test_admin_and_console_spans_are_named_by_route_and_probes_are_not_traced(
    collector: Collector, rivya: Rivya, server: ReceiverProcess
) -> None:
    event = make_event()
    missing = f"evt_..%2F..%2F{secrets.token_hex(8)}"
    assert rivya.send(event).status_code == 200
    ingest_of(collector, event["id"])
    for path in ("/healthz", "/readyz", "/metrics"):
        assert HTTP.get(f"{server.url}{path}", headers=ADMIN).status_code == 200
    assert rivya.admin(f"/events/{event['id']}").status_code == 200
    assert rivya.admin(f"/events/{missing}").status_code == 404
    console = HTTP.get(f"{server.url}/console/events/{event['id']}")
    assert console.status_code == 303, "signed out, to the sign-in page: a span all the same"

    def asked(span: CollectedSpan) -> bool:
        """The module's servers share the collector: this test's requests name its IDs."""
        target = str(span.attributes.get("http.target", span.attributes.get("url.path", "")))
        return event["id"] in target or missing[-16:] in target

    def all_arrived() -> bool:
        return len([span for span in collector.spans() if asked(span)]) == 3

    wait_until(all_arrived, timeout=WAIT, what="the admin and console spans")
    admin = [span for span in collector.named(ADMIN_EVENT) if asked(span)]
    assert {span.attributes["http.route"] for span in admin} == {"/admin/events/{event_id:path}"}
    assert sorted(http_status(span) for span in admin) == [200, 404]
    assert all(span.kind == SERVER for span in admin)
    (page,) = [span for span in collector.spans() if asked(span) and span not in admin]
    assert page.name == "GET /console/events/{event_id:path}"
    names = {span.name for span in collector.spans()}
    assert not [name for name in names if event["id"] in name or missing[-16:] in name]
    assert not [
        name for name in names if any(probe in name for probe in ("healthz", "readyz", "metrics"))
    ]
    targets = {
        str(span.attributes.get("http.target", span.attributes.get("url.path", "")))
        for span in collector.spans()
    }
    assert not targets & {"/healthz", "/readyz", "/metrics"}


def test_request_and_delivery_log_lines_carry_their_spans_ids(
    collector: Collector, rivya: Rivya, server: ReceiverProcess
) -> None:
    event = make_event()
    assert rivya.send(event).status_code == 200
    ingest = ingest_of(collector, event["id"])
    (deliver,) = deliveries_of(collector, event["id"])

    def logged() -> bool:
        return any(
            line.get("event_id") == event["id"] for line in log_lines(server, "delivery_attempt")
        )

    wait_until(logged, timeout=WAIT, what="the delivery_attempt line")
    requests = [
        line
        for line in log_lines(server, "request")
        if line.get("trace_id") == ingest.trace_id and line.get("path") == "/webhooks/rivya"
    ]
    assert [(line["span_id"], line["http_status"]) for line in requests] == [(ingest.span_id, 200)]
    (attempt,) = [
        line for line in log_lines(server, "delivery_attempt") if line["event_id"] == event["id"]
    ]
    assert (attempt["trace_id"], attempt["span_id"]) == (deliver.trace_id, deliver.span_id)


@pytest.mark.any_backend  # the metrics' exemplars, not the database's
def test_histograms_carry_the_trace_as_exemplar_in_openmetrics_only(
    collector: Collector, rivya: Rivya, server: ReceiverProcess, downstream: Downstream
) -> None:
    event = make_event()
    assert rivya.send(event).status_code == 200
    ingest = ingest_of(collector, event["id"])
    deliveries_of(collector, event["id"])
    received(downstream, event["id"], rivya.sensitive)

    exemplar = f'# {{trace_id="{ingest.trace_id}"}}'

    def scraped() -> str:
        answer = HTTP.get(f"{server.url}/metrics", headers={**ADMIN, "accept": OPENMETRICS})
        assert answer.headers["content-type"].startswith("application/openmetrics-text")
        return answer.text

    def both_exemplars() -> bool:
        lines = scraped().splitlines()
        return all(
            any(line.startswith(metric) and exemplar in line for line in lines)
            for metric in (
                "receiver_ingest_duration_seconds_bucket",
                "receiver_delivery_duration_seconds_bucket",
            )
        )

    wait_until(both_exemplars, timeout=WAIT, what=lambda: f"exemplars {exemplar}:\n{scraped()}")
    assert scraped().rstrip().endswith("# EOF")

    plain = HTTP.get(f"{server.url}/metrics", headers=ADMIN)
    assert plain.headers["content-type"].startswith("text/plain")
    assert "receiver_ingest_duration_seconds_bucket" in plain.text
    assert "trace_id" not in plain.text
    assert "# EOF" not in plain.text


def test_a_replay_through_the_admin_api_starts_a_new_trace_linked_to_the_original(
    collector: Collector,
    start_server: StartServer,
    rivya: Rivya,
    downstream: Downstream,
) -> None:
    server = start_server()
    sender = Rivya(server, rivya.secret, rivya.sensitive)
    event = make_event()
    assert sender.send(event).status_code == 200
    ingest = ingest_of(collector, event["id"])
    (original,) = deliveries_of(collector, event["id"])
    received(downstream, event["id"], rivya.sensitive)

    answer = sender.admin("/replay", "POST", json={"type": event["type"]})
    assert answer.status_code == 202, answer.text
    assert answer.json()["deliveries"] == 1

    first, replayed = deliveries_of(collector, event["id"], 2)
    # The module's servers share the collector: the replay's request is the parent's span.
    admin = one_span(collector, lambda span: span.span_id == replayed.parent_span_id, "admin")
    assert (admin.name, admin.kind, http_status(admin)) == ("POST /admin/replay", SERVER, 202)
    assert first == original
    assert replayed.trace_id not in (ingest.trace_id, original.trace_id)
    assert (replayed.trace_id, replayed.parent_span_id) == (admin.trace_id, admin.span_id)
    assert [(link.trace_id, link.span_id, link.attributes) for link in replayed.links] == [
        (ingest.trace_id, ingest.span_id, {"receiver.link": "replay_of"})
    ]
    _, again = received(downstream, event["id"], rivya.sensitive, 2)
    assert again.headers["traceparent"].startswith(f"00-{admin.trace_id}-{replayed.span_id}-")


def test_one_event_to_two_destinations_is_two_attempt_spans_under_one_server_span(
    collector: Collector,
    start_server: StartServer,
    own_downstream: StartDownstream,
    new_secrets: Callable[[], str],
    rivya: Rivya,
    tmp_path: Path,
) -> None:
    billing, crm = own_downstream(), own_downstream()
    tables = [
        {"name": "billing", "url": billing.url, "signing_secrets": new_secrets()},
        {"name": "crm", "url": crm.url, "signing_secrets": new_secrets()},
    ]
    server = start_server(**only(write_destinations(tmp_path / "destinations.toml", *tables)))
    sender = Rivya(server, rivya.secret, rivya.sensitive)
    event = make_event()
    assert sender.send(event).status_code == 200

    ingest = ingest_of(collector, event["id"])
    spans = collector.wait_for(DELIVER, 2, WAIT, **{"receiver.event_id": event["id"]})
    by_destination = {span.attributes["receiver.destination"]: span for span in spans}
    assert sorted(by_destination) == ["billing", "crm"]
    for name, sink in (("billing", billing), ("crm", crm)):
        span = by_destination[name]
        assert (span.trace_id, span.parent_span_id) == (ingest.trace_id, ingest.span_id)
        (sent,) = received(sink, event["id"], rivya.sensitive)
        assert sent.headers["traceparent"].startswith(f"00-{ingest.trace_id}-{span.span_id}-")
        assert span.attributes["server.port"] == int(sink.url.split(":")[2].split("/")[0])
    assert by_destination["billing"].span_id != by_destination["crm"].span_id


def test_a_retried_delivery_is_one_attempt_span_each_under_the_ingest_span(
    collector: Collector, rivya: Rivya, downstream: Downstream
) -> None:
    event = make_event()

    def first_fails(request: Received, earlier: int) -> tuple[int, dict[str, str]]:
        failed = request.headers.get("webhook-id") == event["id"] and earlier == 0
        return (500 if failed else 200), {}

    downstream.respond = first_fails
    try:
        assert rivya.send(event).status_code == 200
        ingest = ingest_of(collector, event["id"])
        first, second = deliveries_of(collector, event["id"], 2)
        sent = received(downstream, event["id"], rivya.sensitive, 2)
    finally:
        downstream.respond = lambda _, __: (200, {})

    for attempt in (first, second):
        assert (attempt.trace_id, attempt.parent_span_id) == (ingest.trace_id, ingest.span_id)
    assert [span.attributes["receiver.delivery.attempt"] for span in (first, second)] == [1, 2]
    assert first.attributes["error.type"] == "500"
    assert first.attributes["http.response.status_code"] == 500
    assert first.attributes["receiver.delivery.state"] != "delivered"
    assert first.status_code == ERROR
    assert second.attributes["receiver.delivery.state"] == "delivered"
    assert "error.type" not in second.attributes
    assert second.status_code != ERROR
    assert [request.headers["traceparent"].split("-")[2] for request in sent] == [
        first.span_id,
        second.span_id,
    ]


def test_an_event_stored_with_no_or_an_unreadable_trace_context_is_delivered_in_its_own_trace(
    collector: Collector,
    start_server: StartServer,
    rivya: Rivya,
    downstream: Downstream,
) -> None:
    """As for an event stored before tracing (NULL), or a column written by hand."""
    server = start_server("serve", "--no-forwarder")
    sender = Rivya(server, rivya.secret, rivya.sensitive)
    stored = {"garbage": make_event(), None: make_event()}
    for event in stored.values():
        assert sender.send(event).status_code == 200
    with reading(server.env["RECEIVER_DATABASE_URL"]) as db:
        for traceparent, event in stored.items():
            db.execute(
                sa.text("UPDATE events SET traceparent = :value WHERE id = :id"),
                {"value": traceparent, "id": event["id"]},
            )
        db.commit()
    start_server("worker")

    for event in stored.values():
        ingest = ingest_of(collector, event["id"])
        (deliver,) = deliveries_of(collector, event["id"])
        assert deliver.parent_span_id == ""
        assert deliver.trace_id != ingest.trace_id
        assert deliver.attributes["receiver.delivery.state"] == "delivered"
        (sent,) = received(downstream, event["id"], rivya.sensitive)
        assert sent.headers["traceparent"].startswith(f"00-{deliver.trace_id}-{deliver.span_id}-")
