"""GET /metrics on a real server: Prometheus text that counts what happened and reads the
database's state at each scrape."""

from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_TOKEN, Rivya
from tests.helpers import (
    HTTP,
    ReceiverProcess,
    free_port,
    make_event,
    new_secret,
    run_cli,
    sign,
    wait_until,
)


def scrape(url: str, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = HTTP.get(f"{url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_requests_deliveries_records_and_credits_are_counted(rivya: Rivya) -> None:
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
        forward_url=f"http://127.0.0.1:{free_port()}/hooks", forward_retry_schedule="60"
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


def test_private_metrics_need_the_admin_token(
    start_server: Callable[..., ReceiverProcess],
) -> None:
    process = start_server(metrics_public="false")
    assert HTTP.get(f"{process.url}/metrics").status_code == 401
    assert scrape(process.url, authorization=f"Bearer {ADMIN_TOKEN}")


def test_private_metrics_without_an_admin_token_stop_the_start(tmp_path: Path) -> None:
    result = run_cli(
        "serve",
        env={"RECEIVER_SIGNING_SECRETS": new_secret(), "RECEIVER_METRICS_PUBLIC": "false"},
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "RECEIVER_METRICS_PUBLIC=false needs RECEIVER_ADMIN_TOKEN" in result.stderr
