"""`receiver.destination.disabled` and `.enabled`, through a real `receiver serve` on each
backend: a 410 Gone (or an operator) disables billing, and the periodic check raises the
condition once, stored once, forwarded only to the subscriber that names it (signed, checked
with standardwebhooks), told to the notification endpoint once; enabling ends it once. A
second disable, by hand with a reason, is a condition of its own."""

import time
from collections.abc import Callable

import orjson

from tests.conftest import Rivya
from tests.helpers import Operator, ReceiverProcess, always, make_event, wait_until
from tests.operational.observed import Sinks, stored

CHECK_SECONDS = "0.2"
# Checks that would raise or end a condition again have had time to, many times.
SETTLE_SECONDS = 10 * float(CHECK_SECONDS)
DISABLED = ("receiver.destination.disabled", "Destination disabled: billing")
ENABLED = ("receiver.destination.enabled", "Destination enabled: billing")


def test_a_disabled_destination_is_one_event_and_enabling_it_ends_it_once(
    start_server: Callable[..., ReceiverProcess],
    sinks: Callable[..., Sinks],
    rivya: Rivya,
) -> None:
    made = sinks(always(410))
    server = start_server(**made.settings, alert_check_seconds=CHECK_SECONDS)
    sender = Rivya(server, rivya.secret, rivya.sensitive)
    first = make_event()
    assert sender.send(first).status_code == 200
    waiting = make_event()
    wait_until(lambda: made.received(DISABLED[0]) != [], timeout=30, what="disabled event")
    assert sender.send(waiting).status_code == 200
    wait_until(lambda: made.messages(DISABLED[1]) != [], timeout=30, what="its message")
    time.sleep(SETTLE_SECONDS)

    (event,) = made.received(DISABLED[0])
    assert event["data"]["destination"] == "billing"
    assert (event["data"]["disabled_by"], event["data"]["reason"]) == ("410", "410 Gone")
    (kept,) = stored(sender, DISABLED[0])
    assert kept["payload"] == event
    assert [d["destination"] for d in kept["deliveries"]] == ["ops"], "ops alone names it"
    sent = [orjson.loads(request.body)["id"] for request in made.billing.received]
    assert sent == [first["id"]], "billing is sent nothing after its 410"
    (message,) = made.messages(DISABLED[1])
    assert "Nothing is sent to billing: it answered 410 Gone." in message.message
    assert "`receiver destinations enable billing`" in message.message

    operator = Operator(server)
    made.billing.respond = always(200)
    operator.run("destinations", "enable", "billing")
    wait_until(lambda: made.received(ENABLED[0]) != [], timeout=30, what="enabled event")
    wait_until(lambda: made.messages(ENABLED[1]) != [], timeout=30, what="its message")
    wait_until(lambda: waiting["id"] in made.billing.ids(), timeout=10, what="the waiting one")
    time.sleep(SETTLE_SECONDS)
    (ended,) = made.received(ENABLED[0])
    assert ended["data"]["destination"] == "billing"
    assert ended["data"]["disabled_by"] == "410"
    assert len(stored(sender, ENABLED[0])) == 1
    assert len(made.messages(ENABLED[1])) == 1
    assert len(made.received(DISABLED[0])) == 1, "still the one disabled event"

    operator.run("destinations", "disable", "billing", "--reason", "moving to v2")
    wait_until(lambda: len(made.received(DISABLED[0])) == 2, timeout=30, what="a second")
    time.sleep(SETTLE_SECONDS)
    second = made.received(DISABLED[0])[1]
    assert (second["data"]["disabled_by"], second["data"]["reason"]) == ("cli", "moving to v2")
    assert second["id"] != event["id"], "a condition of its own"
    assert len(made.messages(DISABLED[1])) == 2
    assert "cli disabled it (moving to v2)" in made.messages(DISABLED[1])[1].message
