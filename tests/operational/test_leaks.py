"""No secret leaves with an operational event, wherever it goes: a real `receiver serve` with
a notification URL holding tokens in its path and its query, signing secrets for each
destination, the admin token and a Rivya API key, raising dead letters, a pause, low
credits and a refused key; then every place those events reach is scanned for each secret
(and for the module's signatures, bodies and result URLs): the process's log, the messages
sent, the stored events, the events forwarded, the console's overview and the CLI's
`notify test`."""

from collections.abc import Callable
from functools import partial
from pathlib import Path

import orjson
import pytest

from receiver.operational.events import OperationalType
from tests.conftest import ADMIN_TOKEN, Rivya, Sensitive
from tests.console.conftest import Browser
from tests.fake_rivya import FakeRivya
from tests.helpers import ReceiverProcess, always, make_event, run_cli, wait_until
from tests.operational.observed import Sinks, stored
from tests.reconcile.conftest import fake_rivya, reconciling  # noqa: F401 - a fixture, shared

RAISED = (
    OperationalType.DELIVERY_DEAD,
    OperationalType.DESTINATION_PAUSED,
    OperationalType.CREDITS_LOW,
    OperationalType.RECONCILE_REFUSED,
)


# What is scanned is written by the service's own code, the same on either backend: the
# database only holds what it is given.
@pytest.mark.any_backend
def test_no_secret_reaches_a_log_message_event_page_or_output(
    start_server: Callable[..., ReceiverProcess],
    sinks: Callable[..., Sinks],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    fake_rivya: FakeRivya,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    made = sinks(always(500))
    endpoint = made.endpoint
    fake_rivya.credits = 5
    server = start_server(
        **made.settings,
        **reconciling(fake_rivya, reconcile_interval_seconds="0.3", low_credits_threshold="100"),
        forward_retry_schedule="0.01",
        alert_coalesce_seconds="1",
        alert_check_seconds="0.2",
        public_url="https://receiver.example",
        log_level="debug",
    )
    sender = Rivya(server, secrets_in_use[0], sensitive)

    def arrived(event_type: str) -> bool:
        return made.received(event_type) != []

    for _ in range(25):  # past the breaker's 20 failures in a row: a pause
        assert sender.send(make_event(event_type="generation.failed")).status_code == 200
    wait_until(partial(arrived, OperationalType.CREDITS_LOW), timeout=30, what="credits low")
    fake_rivya.key = "rvya_sk_" + "0" * 32  # now ours is refused

    for raised in RAISED:
        wait_until(partial(arrived, raised), timeout=60, what=raised)
    endpoint.wait_for(len(RAISED), timeout=60)

    places: dict[str, str] = {
        "messages": "\n".join(f"{s.title}\n{s.message}" for s in endpoint.received),
        "stored events": orjson.dumps([stored(sender, raised) for raised in RAISED]).decode(),
        "forwarded events": "\n".join(r.body.decode() for r in made.ops.received),
    }
    browser = Browser(server.url)
    try:
        assert browser.sign_in(ADMIN_TOKEN).status_code == 303
        # Its panel of notifications, scanned once it lists the last one raised.
        wait_until(
            lambda: "Rivya refuses the API key" in browser.get("/console/").text,
            timeout=15,
            what="the overview's notifications",
        )
        places["console overview"] = browser.get("/console/").text
    finally:
        browser.client.close()
    tried = run_cli("notify", "test", env=server.env, cwd=tmp_path)
    assert (tried.returncode, tried.stdout) == (0, "1 json: sent\n"), tried.stderr
    places["notify test"] = tried.stdout + tried.stderr
    server.stop()
    places["log"] = server.output()

    assert endpoint.token in server.env["RECEIVER_NOTIFY_URLS"]  # the scan looks for it
    assert fake_rivya.calls_to("/api/v1/credits"), "reconciliation never ran"
    assert {place: sensitive.found_in(text) for place, text in places.items()} == {
        place: [] for place in places
    }
