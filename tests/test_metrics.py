"""GET /metrics on a real server: Prometheus text that counts what happened and reads the
database's state, behind the admin token unless opened, at most a refresh interval old."""

import signal
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_TOKEN, Rivya
from tests.helpers import (
    HTTP,
    ReceiverProcess,
    free_port,
    make_event,
    sign,
    wait_until,
)

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
# Gauges recomputed at the first scrape after this many seconds: tests that watch them move.
QUICK = "0.2"


def scrape(
    url: str, headers: dict[str, str] = ADMIN
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = HTTP.get(f"{url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_requests_deliveries_records_and_credits_are_counted(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya
) -> None:
    rivya = Rivya(start_server(metrics_refresh_seconds=QUICK), rivya.secret, rivya.sensitive)
    accepted, failed = make_event(), make_event("generation.failed")
    for event in (accepted, accepted, failed):
        assert rivya.send(event).status_code == 200
    quarantined = b"not json"
    assert rivya.post(quarantined, sign(rivya.secret, quarantined, "msg_q")).status_code == 200
    unsigned = rivya.post(b"{}", {"content-type": "application/json"})
    wrong_type = rivya.post(b"{}", {"content-type": "text/plain"})
    assert (unsigned.status_code, wrong_type.status_code) == (401, 415)
    delivered = ("receiver_deliveries", (("destination", "default"), ("state", "delivered")))
    # Outcomes are written in batches, just after the downstream answers.
    wait_until(lambda: scrape(rivya.server.url)[delivered] == 3, timeout=10)

    metrics = scrape(rivya.server.url)
    requests = "receiver_webhook_requests_total"
    assert metrics[(requests, (("outcome", "accepted"), ("reason", "")))] == 2
    assert metrics[(requests, (("outcome", "duplicate"), ("reason", "")))] == 1
    assert metrics[(requests, (("outcome", "quarantined"), ("reason", "")))] == 1
    assert metrics[(requests, (("outcome", "rejected"), ("reason", "missing_header")))] == 1
    assert metrics[(requests, (("outcome", "rejected"), ("reason", "unsupported_media_type")))] == 1
    assert metrics[("receiver_ingest_duration_seconds_count", ())] == 6
    assert (
        metrics[("receiver_write_batch_size_sum", ())] == 4
    )  # four submissions, the duplicate among them
    assert metrics[("receiver_write_commit_seconds_count", ())] >= 1
    attempts = (("destination", "default"), ("result", "2xx"))
    assert metrics[("receiver_delivery_attempts_total", attempts)] >= 3
    assert metrics[delivered] == 3
    assert metrics[("receiver_pending_deliveries", (("destination", "default"),))] == 0
    oldest = ("receiver_oldest_pending_delivery_age_seconds", (("destination", "default"),))
    assert metrics[oldest] == 0
    assert metrics[("receiver_records", (("status", "succeeded"),))] == 1
    assert metrics[("receiver_records", (("status", "failed"),))] == 1
    assert metrics[("receiver_final_credits", (("model", "z-image"),))] == 4
    assert metrics[("receiver_database_up", ())] == 1


def test_oldest_pending_delivery_ages_while_the_downstream_is_down(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya
) -> None:
    # One retry, a minute away: the delivery stays pending for the whole test.
    process = start_server(
        forward_url=f"http://127.0.0.1:{free_port()}/hooks",
        forward_retry_schedule="60",
        metrics_refresh_seconds=QUICK,
    )
    Rivya(process, rivya.secret, rivya.sensitive).send(make_event())

    def age() -> float:
        oldest = ("receiver_oldest_pending_delivery_age_seconds", (("destination", "default"),))
        return scrape(process.url)[oldest]

    wait_until(lambda: age() >= 1.0, timeout=10)
    metrics = scrape(process.url)
    assert metrics[("receiver_pending_deliveries", (("destination", "default"),))] == 1
    refused = (("destination", "default"), ("result", "connection_error"))
    assert metrics[("receiver_delivery_attempts_total", refused)] >= 1


def test_metrics_need_the_admin_token_unless_opened(
    start_server: Callable[..., ReceiverProcess],
) -> None:
    """Private by default (the credit balance, spend by model, destination names);
    RECEIVER_METRICS_PUBLIC=true opens them."""
    private = start_server()
    assert HTTP.get(f"{private.url}/metrics").status_code == 401
    wrong = {"authorization": "Bearer " + "x" * len(ADMIN_TOKEN)}
    assert HTTP.get(f"{private.url}/metrics", headers=wrong).status_code == 401
    assert scrape(private.url)[("receiver_database_up", ())] == 1
    private.stop()
    public = start_server(metrics_public="true")
    assert scrape(public.url, headers={})[("receiver_database_up", ())] == 1


def test_without_an_admin_token_the_service_starts_and_metrics_stay_closed(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya
) -> None:
    process = start_server(admin_token="")
    assert Rivya(process, rivya.secret, rivya.sensitive).send(make_event()).status_code == 200
    assert HTTP.get(f"{process.url}/metrics").status_code == 401
    assert '"event":"metrics_unreachable"' in process.output()


def test_metrics_port_serves_them_open_on_loopback_beside_the_closed_main_port(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya
) -> None:
    port = free_port()
    process = start_server(metrics_port=str(port))
    Rivya(process, rivya.secret, rivya.sensitive).send(make_event())
    assert HTTP.get(f"{process.url}/metrics").status_code == 401
    beside = scrape(f"http://127.0.0.1:{port}", headers={})
    # The same registry and database as the main listener's.
    accepted = ("receiver_webhook_requests_total", (("outcome", "accepted"), ("reason", "")))
    assert beside[accepted] == 1
    assert beside[("receiver_records", (("status", "succeeded"),))] == 1
    # Both listeners stop on the one SIGTERM (uvicorn re-raises it once they have).
    assert process.stop() == -signal.SIGTERM
    assert "metrics_unreachable" not in process.output()


def test_a_scrape_reads_gauges_computed_within_the_refresh_interval(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya
) -> None:
    """The database counts run at most once an interval, whatever the scrape rate: events
    stored after a scrape show in the counters at once, in the gauges only once due."""
    process = start_server(metrics_refresh_seconds="3600")
    sender = Rivya(process, rivya.secret, rivya.sensitive)
    sender.send(make_event())
    succeeded = ("receiver_records", (("status", "succeeded"),))
    assert scrape(process.url)[succeeded] == 1
    for _ in range(3):
        sender.send(make_event())
    metrics = scrape(process.url)
    accepted = ("receiver_webhook_requests_total", (("outcome", "accepted"), ("reason", "")))
    assert metrics[accepted] == 4
    assert metrics[succeeded] == 1


def test_destinations_listing_shows_the_gauges_counts_and_when_they_were_counted(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya
) -> None:
    """GET /admin/destinations reads the totals the gauges were set from (no count of every
    delivery per call), says when they were counted, and agrees with a scrape; after two
    idle intervals it waits for a fresh count rather than show an older one."""
    process = start_server("serve", "--no-forwarder", metrics_refresh_seconds="3600")
    sender = Rivya(process, rivya.secret, rivya.sensitive)
    first = HTTP.get(f"{process.url}/admin/destinations", headers=ADMIN).json()
    assert sender.send(make_event()).status_code == 200
    again = HTTP.get(f"{process.url}/admin/destinations", headers=ADMIN).json()
    assert again == first, "the same count, within the interval"
    assert [(d["destination"], d["pending"]) for d in again["destinations"]] == [("default", 0)]
    assert scrape(process.url)[("receiver_pending_deliveries", (("destination", "default"),))] == 0

    quick = start_server("serve", "--no-forwarder", metrics_refresh_seconds=QUICK)
    sender = Rivya(quick, rivya.secret, rivya.sensitive)
    before = HTTP.get(f"{quick.url}/admin/destinations", headers=ADMIN).json()
    assert sender.send(make_event()).status_code == 200
    time.sleep(3 * float(QUICK))
    after = HTTP.get(f"{quick.url}/admin/destinations", headers=ADMIN).json()
    assert after["counted_at"] > before["counted_at"]
    pending = {d["destination"]: d["pending"] for d in after["destinations"]}
    assert pending["default"] == before["destinations"][0]["pending"] + 1
