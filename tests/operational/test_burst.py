"""A burst of dead letters to one destination is one coalesced `receiver.delivery.dead`
(the count of all of them, the first few IDs) and one message: a real `receiver serve`, a
sink answering 500 to every one of BURST deliveries (each has one attempt), a subscribed
sink, and a real notification endpoint through Apprise's `json://`; on both backends."""

import threading
import time
from collections.abc import Callable

from receiver.operational.alerts import FIRST_DEAD_LETTERS
from tests.conftest import Rivya, Sensitive
from tests.helpers import ONE_ATTEMPT, Received, ReceiverProcess, make_event, wait_until
from tests.operational.observed import Sinks, stored

BURST = 500
# The sink holds every request until all BURST are in (or this long): all of them are in
# flight before the first answer, so the breaker, which pauses the lane after 20 failures
# in a row, pauses it only once every attempt has started, and each of BURST dies at its
# first attempt instead of waiting out pauses of up to a minute each.
HOLD_SECONDS = 60.0
# Wider than the burst takes to die (its answers all come at once), so it is one window.
COALESCE_SECONDS = "8"
CHECK_SECONDS = "0.2"
DEAD = "receiver.delivery.dead"


def test_a_burst_of_dead_letters_is_one_event_and_one_message(
    start_server: Callable[..., ReceiverProcess],
    sinks: Callable[..., Sinks],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
) -> None:
    all_in = threading.Event()

    def hold_then_refuse(_: Received, __: int) -> tuple[int, dict[str, str]]:
        if len(made.billing.received) >= BURST:
            all_in.set()
        all_in.wait(HOLD_SECONDS)
        return 500, {}

    made = sinks(hold_then_refuse, max_in_flight=512)
    server = start_server(
        **made.settings,
        forward_retry_schedule=ONE_ATTEMPT,
        forward_timeout_seconds=str(HOLD_SECONDS + 10),
        forward_lease_seconds=str(3 * HOLD_SECONDS),
        alert_coalesce_seconds=COALESCE_SECONDS,
        alert_check_seconds=CHECK_SECONDS,
    )
    sender = Rivya(server, secrets_in_use[0], sensitive)
    sent = [make_event(event_type="generation.failed") for _ in range(BURST)]
    for event in sent:  # one by one: their deliveries' order is the order sent
        assert sender.send(event).status_code == 200

    wait_until(lambda: len(made.received(DEAD)) == 1, timeout=60, what=DEAD)
    # Every dead letter is in it, so there are none left to make a second one.
    (event,) = made.received(DEAD)
    assert (event["data"]["destination"], event["data"]["count"]) == ("billing", BURST)
    first = event["data"]["first"]
    assert [letter["event_id"] for letter in first] == [e["id"] for e in sent[:FIRST_DEAD_LETTERS]]
    assert {(letter["attempts"], letter["last_status_code"]) for letter in first} == {(1, 500)}
    assert event["source"] == "receiver"
    dead = sender.admin("/deliveries", params={"state": "dead", "limit": "1000"}).json()
    assert len(dead["deliveries"]) == BURST

    title = "Dead letters: billing"
    wait_until(lambda: made.messages(title) != [], timeout=30, what="the message")
    time.sleep(10 * float(CHECK_SECONDS))  # checks that would raise another had time to
    assert len(made.received(DEAD)) == 1
    assert [s["payload"] for s in stored(sender, DEAD)] == [event]
    (message,) = made.messages(title)
    assert f"{BURST} deliveries to billing gave up (dead)." in message.message
