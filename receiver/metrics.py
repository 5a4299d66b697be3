"""Prometheus metrics: what this process saw (counters, histograms) and what the database
holds (gauges, so every replica reports the same totals).

The database gauges count whole tables (deliveries by destination and state, credits summed
over every record: 0.35 s at a million rows, measured), so a scrape never waits for them: it
reads the totals last computed, and if those are older than RECEIVER_METRICS_REFRESH_SECONDS
it starts one computation in the background for the next scrape. Anyone scraping in a loop,
or several Prometheus servers, cost one computation an interval; only a process's first
scrape waits for one. The console's overview and GET /admin/destinations show the same
totals (`totals`), with when they were computed, for the same reason; they wait only when
nobody has asked for two intervals.

Each app has a registry of its own, so several apps in one process never collide.
"""

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from receiver.exceptions import StoreUnavailableError
from receiver.operational.notifier import NOTIFICATION_RESULTS
from receiver.services import Services, services_of
from receiver.store.deliveries import DeliveryState
from receiver.store.health import COUNTED
from receiver.store.stats import collect_totals
from receiver.tracing.carriers import trace_exemplar
from receiver.tracing.export import DroppedSpans

WEBHOOK_PATH = "/webhooks/rivya"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# How long the database gauges' computation may take before it counts as the database not
# answering (receiver_database_up 0): as long as a scrape could wait for it before the
# gauges were cached (Prometheus's default scrape_timeout), thirty times the million-row
# count. Without it, a server that stopped answering held the computation, and so every
# later one, while each scrape still answered at once with the old gauges and database_up 1.
COUNT_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Totals:
    """What collect_totals answered, and when."""

    numbers: dict[str, Any]
    counted_at: datetime


class Metrics:
    def __init__(self, refresh_seconds: float, dropped_spans: DroppedSpans | None = None) -> None:
        """`dropped_spans`: tracing's count of spans that never reached the collector
        (`receiver_trace_spans_dropped_total`, present while tracing is on)."""
        self.registry = CollectorRegistry()
        # Exemplars only with tracing on: off, the current span is not even looked up.
        self._exemplars = dropped_spans is not None
        if dropped_spans is not None:
            self.registry.register(_DroppedSpansCollector(dropped_spans))
        self._refresh_seconds = refresh_seconds
        self._refreshed_at: float | None = None  # time.monotonic() of the last computation
        self._refreshing: asyncio.Task[None] | None = None
        self._totals: Totals | None = None  # the last computation that could read them
        self.webhook_requests = Counter(
            "receiver_webhook_requests",
            "Deliveries to POST /webhooks/rivya, by outcome and, for refusals, reason.",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.ingest_seconds = Histogram(
            "receiver_ingest_duration_seconds",
            "Time from a webhook request's arrival to its answer.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.delivery_attempts = Counter(
            "receiver_delivery_attempts",
            "Forwarding attempts made by this process, by destination and result.",
            ["destination", "result"],
            registry=self.registry,
        )
        self.delivery_seconds = Histogram(
            "receiver_delivery_duration_seconds",
            "Time from a forwarding attempt's start to its answer or failure, by destination.",
            ["destination"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.write_batch_size = Histogram(
            "receiver_write_batch_size",
            "Events per group-commit transaction.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "receiver_write_commit_seconds",
            "Time to write and commit one group-commit batch.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.database_up = Gauge(
            "receiver_database_up",
            "1 if the database gauges' last computation could read the database, else 0.",
            registry=self.registry,
        )
        self.deliveries = Gauge(
            "receiver_deliveries",
            "Deliveries in the database, by destination and state (orphaned: pending, to a"
            " destination no longer configured; disabled: pending, to a destination disabled"
            " by a 410 Gone or an operator).",
            ["destination", "state"],
            registry=self.registry,
        )
        self.pending_deliveries = Gauge(
            "receiver_pending_deliveries",
            "Deliveries not yet delivered or dead, by configured destination: the backlog.",
            ["destination"],
            registry=self.registry,
        )
        self.oldest_pending_age = Gauge(
            "receiver_oldest_pending_delivery_age_seconds",
            "Age of a configured destination's oldest pending delivery; 0 when there is none.",
            ["destination"],
            registry=self.registry,
        )
        self.records = Gauge(
            "receiver_records",
            "Generation records, by status.",
            ["status"],
            registry=self.registry,
        )
        self.final_credits = Gauge(
            "receiver_final_credits",
            "Sum of the final credits of generation records, by model.",
            ["model"],
            registry=self.registry,
        )

        self.reconcile_passes = Counter(
            "receiver_reconcile_passes",
            "Reconciliation passes run by this process, by result (ok, auth_failed, unavailable).",
            ["result"],
            registry=self.registry,
        )
        self.rivya_api_requests = Counter(
            "receiver_rivya_api_requests",
            "Calls to Rivya's API by this process, by HTTP status, timeout or connection_error.",
            ["status"],
            registry=self.registry,
        )
        self.records_stale = Gauge(
            "receiver_records_stale",
            "Records not terminal and unchanged for RECEIVER_RECONCILE_AFTER_SECONDS.",
            registry=self.registry,
        )
        self.rivya_credits = Gauge(
            "receiver_rivya_credits",
            "The last credit balance read from Rivya's API (absent until one is read).",
            registry=self.registry,
        )
        self.rivya_credits_low = Gauge(
            "receiver_rivya_credits_low",
            "1 if that balance is at or under RECEIVER_LOW_CREDITS_THRESHOLD, else 0.",
            registry=self.registry,
        )
        self.retention_pruned_events = Counter(
            "receiver_retention_pruned_events",
            "Events removed by this process's scheduled retention (RECEIVER_RETENTION_DAYS).",
            registry=self.registry,
        )
        self.retention_orphaned_deliveries = Counter(
            "receiver_retention_orphaned_deliveries",
            "Orphaned deliveries this process's retention dead-lettered (reason: orphaned).",
            registry=self.registry,
        )
        self.notifications = Counter(
            "receiver_notifications",
            "Messages about operational events, once per notification URL each, by result:"
            " sent, failed (after every try) or dropped (the queue was full, or the process"
            " stopped before it was sent).",
            ["result"],
            registry=self.registry,
        )
        for result in NOTIFICATION_RESULTS:  # at 0 from the start, so a rate has a base
            self.notifications.labels(result)
        self.operational_events = Counter(
            "receiver_operational_events",
            "Operational events this process raised or ended (receiver.*), by type: each"
            " condition is counted by the one replica that decided it.",
            ["type"],
            registry=self.registry,
        )
        self.retention_last_success = Gauge(
            "receiver_retention_last_success_timestamp_seconds",
            "When this process's retention last finished a run (Unix time); absent before.",
            registry=self.registry,
        )

    def observe_request(self, scope: Scope, http_status: int, seconds: float) -> None:
        """RequestLogMiddleware's hook, called once per request with what the handler bound."""
        if scope["path"] != WEBHOOK_PATH:
            return
        bound = structlog.contextvars.get_contextvars()
        if http_status == 200:
            outcome, reason = _accepted_as(bound.get("outcome")), ""
        elif http_status == 503:
            outcome, reason = "unavailable", str(bound.get("reason") or "")
        else:
            outcome, reason = "rejected", str(bound.get("reason") or f"http_{http_status}")
        self.webhook_requests.labels(outcome, reason).inc()
        # Called within the request's span: with tracing on, the bucket keeps its trace ID.
        self.ingest_seconds.observe(seconds, trace_exemplar() if self._exemplars else None)

    def observe_attempt(
        self, destination: str, status_code: int | None, error_class: str | None, seconds: float
    ) -> None:
        """The forwarder's hook, called within the attempt's span."""
        exemplar = trace_exemplar() if self._exemplars else None
        self.delivery_seconds.labels(destination).observe(seconds, exemplar)
        if status_code is not None:
            result = f"{status_code // 100}xx"
        elif error_class and "Timeout" in error_class:
            result = "timeout"
        else:
            result = "connection_error"
        self.delivery_attempts.labels(destination, result).inc()

    def observe_reconcile_pass(self, result: str) -> None:
        self.reconcile_passes.labels(result).inc()

    def observe_rivya_request(self, status: str) -> None:
        self.rivya_api_requests.labels(status).inc()

    def observe_operational_event(self, event_type: str) -> None:
        self.operational_events.labels(event_type).inc()

    def observe_notification(self, result: str) -> None:
        """The notifier's hook, once per URL a message was sent, failed or dropped for."""
        self.notifications.labels(result).inc()

    def observe_retention(self, pruned_events: int, orphaned: int) -> None:
        self.retention_pruned_events.inc(pruned_events)
        self.retention_orphaned_deliveries.inc(orphaned)
        self.retention_last_success.set_to_current_time()

    def observe_batch(self, size: int, seconds: float) -> None:
        self.write_batch_size.observe(size)
        self.commit_seconds.observe(seconds)

    async def render(self, request: Request) -> Response:
        """GET /metrics."""
        return await self.respond(services_of(request), request)

    async def respond(self, services: Services, request: Request) -> Response:
        """The text format, or OpenMetrics (which alone carries exemplars) when the scraper
        asks for it, as Prometheus does with exemplar storage on."""
        await self._refresh_when_due(services)
        encode, media_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(self.registry), headers={"content-type": media_type})

    async def totals(self, services: Services) -> Totals:
        """The totals the gauges were last set from, refreshed like a scrape's; waits for
        the computation it starts when they are older than two intervals (nobody asked for
        a while), so a page never shows older."""
        await self._refresh_when_due(services)
        oldest = datetime.now(UTC) - timedelta(seconds=2 * self._refresh_seconds)
        if self._refreshing is not None and (
            self._totals is None or self._totals.counted_at < oldest
        ):
            await asyncio.shield(self._refreshing)
        if self._totals is None:
            raise StoreUnavailableError("the database could not be read")
        return self._totals

    async def _refresh_when_due(self, services: Services) -> None:
        now = time.monotonic()
        due = self._refreshed_at is None or now - self._refreshed_at >= self._refresh_seconds
        if due and self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh(services))
        if self._refreshed_at is None and self._refreshing is not None:
            # Nothing computed yet: this scrape waits (shielded, so one that gives up does
            # not cancel the computation the others wait for).
            await asyncio.shield(self._refreshing)

    async def stop_refreshing(self) -> None:
        """On the way out, before the engine closes."""
        if self._refreshing is not None:
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)

    async def _refresh(self, services: Services) -> None:
        try:
            async with (
                asyncio.timeout(COUNT_TIMEOUT_SECONDS),
                services.engine.connect() as connection,
            ):
                stats = await collect_totals(
                    connection,
                    services.settings.forwarding,
                    services.settings.reconcile_after,
                )
        except (SQLAlchemyError, OSError):  # TimeoutError is an OSError
            self.database_up.set(0)
        else:
            self.database_up.set(1)
            self._set_gauges(stats, services.settings.low_credits_threshold)
            self._totals = Totals(stats, datetime.now(UTC))
        finally:
            self._refreshed_at = time.monotonic()
            self._refreshing = None

    def _set_gauges(self, stats: dict[str, Any], low_credits: int | None) -> None:
        # Cleared first: a destination, status or model with no rows left must not linger.
        for gauge in (self.deliveries, self.pending_deliveries, self.oldest_pending_age):
            gauge.clear()
        for entry in stats["destinations"]:
            name = entry["destination"]
            for state in COUNTED:
                self.deliveries.labels(name, state).set(entry[state])
            if entry["configured"]:
                self.pending_deliveries.labels(name).set(entry[DeliveryState.PENDING.value])
                oldest = entry["oldest_pending"]
                self.oldest_pending_age.labels(name).set(oldest["age_seconds"] if oldest else 0)
        self.records.clear()
        for status, count in stats["records"].items():
            self.records.labels(status).set(count)
        self.final_credits.clear()
        for row in stats["credits"]:
            self.final_credits.labels(row["model"] or "").set(row["final"])
        self.records_stale.set(stats["records_stale"])
        if (balance := stats["rivya_credits"]) is not None:
            current = balance["current_credits"]
            self.rivya_credits.set(current)
            self.rivya_credits_low.set(int(low_credits is not None and current <= low_credits))


def metrics_of(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def loopback_app(app: Starlette) -> Starlette:
    """RECEIVER_METRICS_PORT's app: `app`'s /metrics, open, for a listener bound to loopback
    (as exporters serve theirs); 503 until `app` has started."""
    metrics: Metrics = app.state.metrics

    async def render(request: Request) -> Response:
        services = getattr(app.state, "services", None)
        if services is None:
            return Response(status_code=503)
        return await metrics.respond(services, request)

    return Starlette(routes=[Route("/metrics", render)])


class _DroppedSpansCollector(Collector):
    def __init__(self, dropped: DroppedSpans) -> None:
        self._dropped = dropped

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "receiver_trace_spans_dropped",
            "Spans this process ended but never exported, by reason: queue_full (more than"
            " OTEL_BSP_MAX_QUEUE_SIZE waiting) or export_failed (the collector was down, slow"
            " or refused them).",
            labels=["reason"],
        )
        with self._dropped.lock:
            counts = dict(self._dropped.by_reason)
        for reason, count in sorted(counts.items()):
            family.add_metric([reason], count)
        yield family


def _accepted_as(outcome: object) -> str:
    # The handler binds the stored outcome (applied, stale, ignored, quarantined) or
    # "duplicate"; the metric keeps the answer's three words.
    return str(outcome) if outcome in ("duplicate", "quarantined") else "accepted"
