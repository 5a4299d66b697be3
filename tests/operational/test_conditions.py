"""Each operational condition made real through a real `receiver serve`, real sinks and the
fake Rivya API, on each backend: it is raised once (stored, listed, and sent signed only to
the destination that names it), ended once, and not raised again by later checks."""

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from standardwebhooks import Webhook

from receiver.forward.breaker import TRIP_AFTER
from receiver.operational.events import OperationalType
from tests.conftest import ADMIN_TOKEN, Rivya, Sensitive
from tests.fake_rivya import FakeRivya
from tests.helpers import (
    ANSWER_200,
    HTTP,
    ONE_ATTEMPT,
    Downstream,
    Operator,
    Received,
    ReceiverProcess,
    Respond,
    always,
    make_event,
    only,
    wait_until,
    write_destinations,
)
from tests.reconcile.conftest import reconciling, serve_fake_rivya

CHECK_SECONDS = 0.2
# Long enough that the dead letters a test makes at once fall in one window on a loaded
# machine, short enough that a test waits for two.
COALESCE_SECONDS = 2.0
QUICK = {
    "alert_check_seconds": str(CHECK_SECONDS),
    "alert_coalesce_seconds": str(COALESCE_SECONDS),
    "forward_retry_schedule": "0.05",
}
# "Later checks": this many check intervals after an event, none of its type may follow.
LATER_CHECKS = 5
OPERATIONAL_ID = "receiver:"
# The keys of each type's `data` (besides `since`), as the design lists them.
DATA_KEYS = {
    OperationalType.DELIVERY_DEAD: {"destination", "count", "first"},
    OperationalType.DESTINATION_PAUSED: {"destination", "consecutive_failures", "pause_seconds"},
    OperationalType.DESTINATION_RESUMED: {"destination", "paused_seconds"},
    OperationalType.BACKLOG_STUCK: {
        "destination",
        "pending",
        "oldest_age_seconds",
        "threshold_seconds",
    },
    OperationalType.BACKLOG_CLEARED: {
        "destination",
        "pending",
        "oldest_age_seconds",
        "threshold_seconds",
    },
    OperationalType.CREDITS_LOW: {"balance", "threshold"},
    OperationalType.CREDITS_RECOVERED: {"balance", "threshold"},
    OperationalType.RECONCILE_REFUSED: {"code"},
    OperationalType.RECONCILE_RESTORED: {"refused_code"},
    OperationalType.RECORDS_STUCK: {"count", "oldest_task_id", "threshold_seconds"},
}


@pytest.fixture
def fake_rivya(sensitive: Sensitive) -> Iterator[FakeRivya]:
    yield from serve_fake_rivya(sensitive)


@dataclass
class Watched:
    """A server with three destinations: `ops` names the service's own events (or the
    types given), `plain` names nothing (so must receive none of them), and `failing`, no
    types either, answers as the test says."""

    server: ReceiverProcess
    rivya: Rivya
    sinks: dict[str, Downstream]
    keys: dict[str, str]

    def sent(self, event_type: str, to: str = "ops") -> list[dict[str, Any]]:
        """The `event_type` events `to`'s sink received, each verified with its secret."""
        payloads = []
        for request in list(self.sinks[to].received):
            payload = Webhook(self.keys[to]).verify(request.body, request.headers)
            if payload["type"] == event_type:
                assert payload["id"] == request.headers["webhook-id"]
                payloads.append(payload)
        return payloads

    def stored(self, event_type: str) -> list[dict[str, Any]]:
        found = self.rivya.admin(f"/events?type={event_type}")
        assert found.status_code == 200, found.text
        return list(found.json()["events"])

    def listed(self, event_type: str) -> list[dict[str, Any]]:
        return list(Operator(self.server).json("events", "list", "--type", event_type)["events"])

    def raised(
        self, event_type: OperationalType, n: int = 1, cli: bool = False
    ) -> list[dict[str, Any]]:
        """Wait for the `n`th `event_type` event at `ops`, then a few checks more: exactly
        `n` are stored and sent (signed, routed to `ops` alone), none more."""
        wait_until(
            lambda: len(self.sent(event_type)) >= n,
            timeout=30,
            what=lambda: f"{n} {event_type} at ops:\n{self.server.output()[-3000:]}",
        )
        time.sleep(LATER_CHECKS * CHECK_SECONDS)
        sent = self.sent(event_type)
        assert len(sent) == n, sent
        stored = self.stored(event_type)
        assert sorted(e["id"] for e in stored) == sorted(e["id"] for e in sent)
        if cli:
            assert sorted(e["id"] for e in self.listed(event_type)) == sorted(e["id"] for e in sent)
        for payload in sent:
            assert (payload["source"], payload["api_version"]) == ("receiver", None)
            assert payload["id"].startswith(OPERATIONAL_ID)
            assert set(payload["data"]) == {"since", *DATA_KEYS[event_type]}
            shown = self.rivya.admin(f"/events/{payload['id']}").json()
            assert orjson.loads(orjson.dumps(shown["payload"])) == payload
            assert [d["destination"] for d in shown["deliveries"]] == ["ops"]
        self.only_ops_heard_of_it()
        return sent

    def only_ops_heard_of_it(self) -> None:
        for name in ("plain", "failing"):
            assert [i for i in self.sinks[name].ids() if i.startswith(OPERATIONAL_ID)] == []


@pytest.fixture
def watch(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    tmp_path: Path,
) -> Callable[..., Watched]:
    def start(
        failing: Respond = ANSWER_200,
        ops_types: tuple[str, ...] = ("receiver.*",),
        **settings: str,
    ) -> Watched:
        sinks = {"ops": own_downstream(), "plain": own_downstream(), "failing": own_downstream()}
        sinks["failing"].respond = failing
        keys = {name: new_secrets() for name in sinks}
        tables: list[dict[str, Any]] = [
            {"name": name, "url": sink.url, "signing_secrets": keys[name]}
            for name, sink in sinks.items()
        ]
        tables[0]["event_types"] = list(ops_types)
        file = write_destinations(tmp_path / "destinations.toml", *tables)
        server = start_server(**only(file), **(QUICK | settings))
        return Watched(server, Rivya(server, secrets_in_use[0], sensitive), sinks, keys)

    return start


def metrics(server: ReceiverProcess) -> list[str]:
    answer = HTTP.get(f"{server.url}/metrics", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    return answer.text.splitlines()


def send(watched: Watched, n: int, first: dict[str, Any] | None = None) -> list[str]:
    """`n` Rivya events sent to the server (`first` the first, if given): their IDs."""
    events = [first] if first is not None else []
    events += [make_event() for _ in range(n - len(events))]
    for event in events:
        assert watched.rivya.send(event).status_code == 200
    return [event["id"] for event in events]


def test_dead_letters_make_one_coalesced_signed_event_per_window_sent_only_where_named(
    watch: Callable[..., Watched],
) -> None:
    """A sink answering 500 until the retries run out, and 404 to one event: one
    `receiver.delivery.dead` naming the destination, the count and each dead letter with
    its own last answer; dead letters after that window closed make a second event, and
    only one."""
    missing = make_event()

    def respond(request: Received, _: int) -> tuple[int, dict[str, str]]:
        return (404 if request.headers["webhook-id"] == missing["id"] else 500), {}

    watched = watch(respond)
    first = send(watched, 3, missing)
    (event,) = watched.raised(OperationalType.DELIVERY_DEAD, cli=True)
    data = event["data"]
    assert (data["destination"], data["count"]) == ("failing", 3)
    letters = {letter["event_id"]: letter for letter in data["first"]}
    assert set(letters) == set(first)
    for event_id, letter in letters.items():
        assert letter == {
            "event_id": event_id,
            "event_type": "generation.succeeded",
            "attempts": 2,  # QUICK's schedule: one retry
            "last_status_code": 404 if event_id == missing["id"] else 500,
            "last_error": None,
        }

    second = send(watched, 2)
    _, later = watched.raised(OperationalType.DELIVERY_DEAD, n=2)
    assert (later["data"]["destination"], later["data"]["count"]) == ("failing", 2)
    assert {letter["event_id"] for letter in later["data"]["first"]} == set(second)
    assert later["data"]["since"] > data["since"]
    assert len(watched.sinks["plain"].ids()) == 5, "Rivya's events still reach plain"
    counted = f'receiver_operational_events_total{{type="{OperationalType.DELIVERY_DEAD}"}} 2.0'
    assert counted in metrics(watched.server)


# Past RECEIVER_FORWARD_TIMEOUT_SECONDS (HANG_TIMEOUT), so that each attempt times out.
HANG_SECONDS = 1.0
HANG_TIMEOUT = "0.3"


@pytest.mark.parametrize("trouble", ["answers 500", "hangs"])
def test_a_destination_failing_until_the_breaker_trips_is_paused_once_and_resumed_once(
    watch: Callable[..., Watched], trouble: str
) -> None:
    """A sink answering 500, or hanging past the attempt timeout, until the breaker trips,
    then answering 200: paused once (after TRIP_AFTER failures in a row), resumed once."""
    failing = [True]

    def respond(_: Received, __: int) -> tuple[int, dict[str, str]]:
        if failing[0] and trouble == "hangs":
            time.sleep(HANG_SECONDS)
        return (500 if failing[0] else 200), {}

    watched = watch(respond, forward_timeout_seconds=HANG_TIMEOUT)
    send(watched, TRIP_AFTER // 2 + 1)  # two attempts each: past TRIP_AFTER in a row
    (paused,) = watched.raised(OperationalType.DESTINATION_PAUSED)
    assert paused["data"] | {"since": None, "pause_seconds": None} == {
        "since": None,
        "destination": "failing",
        "consecutive_failures": TRIP_AFTER,
        "pause_seconds": None,
    }
    assert paused["data"]["pause_seconds"] > 0
    assert watched.sent(OperationalType.DESTINATION_RESUMED) == []

    failing[0] = False
    (healed,) = send(watched, 1)
    wait_until(lambda: healed in watched.sinks["failing"].ids(), timeout=30)
    (resumed,) = watched.raised(OperationalType.DESTINATION_RESUMED)
    assert resumed["data"]["destination"] == "failing"
    assert resumed["data"]["since"] == paused["data"]["since"]
    assert resumed["data"]["paused_seconds"] > 0
    assert len(watched.sent(OperationalType.DESTINATION_PAUSED)) == 1


def test_a_backlog_older_than_the_threshold_is_stuck_once_and_cleared_once(
    watch: Callable[..., Watched],
) -> None:
    """A sink failing while its deliveries wait to be retried, past the backlog's age
    threshold: stuck once (pending, oldest age); the sink heals, they go: cleared once."""
    failing = [True]
    watched = watch(
        lambda _, __: (503 if failing[0] else 200, {}),
        alert_backlog_age_seconds="1",
        # Retried for ten seconds, so that the backlog waits for the sink to heal.
        forward_retry_schedule=",".join(["0.5"] * 20),
    )
    send(watched, 2)
    (stuck,) = watched.raised(OperationalType.BACKLOG_STUCK)
    data = stuck["data"]
    assert (data["destination"], data["pending"], data["threshold_seconds"]) == ("failing", 2, 1)
    assert data["oldest_age_seconds"] >= 1
    assert watched.sent(OperationalType.BACKLOG_CLEARED) == []

    failing[0] = False
    (cleared,) = watched.raised(OperationalType.BACKLOG_CLEARED)
    assert cleared["data"]["destination"] == "failing"
    assert cleared["data"]["pending"] == 0
    assert cleared["data"]["since"] == data["since"]
    assert len(watched.sent(OperationalType.BACKLOG_STUCK)) == 1


def test_credits_low_and_a_refused_key_are_raised_once_and_ended_once_never_with_the_key(
    watch: Callable[..., Watched], fake_rivya: FakeRivya, sensitive: Sensitive
) -> None:
    """The fake Rivya API reports a low balance, then one over the threshold, then refuses
    the key (401), then takes it again: each raised once and ended once, and no event
    carries the key."""
    key = fake_rivya.key
    fake_rivya.credits = 40
    watched = watch(
        **reconciling(fake_rivya, reconcile_interval_seconds="0.3", low_credits_threshold="100"),
    )
    (low,) = watched.raised(OperationalType.CREDITS_LOW)
    assert low["data"] | {"since": None} == {"since": None, "balance": 40, "threshold": 100}

    fake_rivya.credits = 500
    (recovered,) = watched.raised(OperationalType.CREDITS_RECOVERED)
    assert recovered["data"] == {"since": low["data"]["since"], "balance": 500, "threshold": 100}

    fake_rivya.key = f"{key}-rotated"  # the server's key is refused from now on
    sensitive.add(fake_rivya.key)
    (refused,) = watched.raised(OperationalType.RECONCILE_REFUSED)
    assert refused["data"] | {"since": None} == {"since": None, "code": "api_key_invalid"}

    fake_rivya.key = key
    (restored,) = watched.raised(OperationalType.RECONCILE_RESTORED)
    assert restored["data"] == {
        "since": refused["data"]["since"],
        "refused_code": "api_key_invalid",
    }
    for request in watched.sinks["ops"].received:
        assert key not in request.body.decode()
        assert key not in str(request.headers)


def test_a_destination_naming_one_type_receives_that_type_alone(
    watch: Callable[..., Watched], fake_rivya: FakeRivya
) -> None:
    """`ops` names `receiver.credits.low`: of a low balance and its recovery it receives the
    first alone, and none of Rivya's events."""
    fake_rivya.credits = 40
    watched = watch(
        ops_types=(OperationalType.CREDITS_LOW.value,),
        **reconciling(fake_rivya, reconcile_interval_seconds="0.3", low_credits_threshold="100"),
    )
    send(watched, 1)
    watched.raised(OperationalType.CREDITS_LOW)
    fake_rivya.credits = 500
    wait_until(lambda: watched.stored(OperationalType.CREDITS_RECOVERED) != [], timeout=30)
    time.sleep(LATER_CHECKS * CHECK_SECONDS)
    assert [orjson.loads(r.body)["type"] for r in watched.sinks["ops"].received] == [
        OperationalType.CREDITS_LOW.value
    ]
    (recovered,) = watched.stored(OperationalType.CREDITS_RECOVERED)
    assert watched.rivya.admin(f"/events/{recovered['id']}").json()["deliveries"] == []
    watched.only_ops_heard_of_it()


def test_records_not_terminal_past_the_threshold_raise_records_stuck_once(
    watch: Callable[..., Watched],
) -> None:
    """A registered task left queued: one `receiver.records.stuck` (count, oldest task ID),
    not raised again while it stays stuck, nor when another task joins it."""
    watched = watch(alert_stuck_records_seconds="1")
    oldest = "task_stuck_oldest"
    assert watched.rivya.admin("/tasks", method="POST", json={"task_id": oldest}).status_code == 201
    (stuck,) = watched.raised(OperationalType.RECORDS_STUCK, cli=True)
    assert stuck["data"] | {"since": None} == {
        "since": None,
        "count": 1,
        "oldest_task_id": oldest,
        "threshold_seconds": 1,
    }
    created = watched.rivya.admin("/tasks", method="POST", json={"task_id": "task_stuck_next"})
    assert created.status_code == 201
    time.sleep(1 + LATER_CHECKS * CHECK_SECONDS)
    assert len(watched.sent(OperationalType.RECORDS_STUCK)) == 1
    assert len(watched.stored(OperationalType.RECORDS_STUCK)) == 1


def test_replays_send_operational_events_only_where_named_unless_a_destination_is_named(
    watch: Callable[..., Watched],
) -> None:
    """`receiver replay --type receiver.delivery.dead` by filter goes to `ops` alone (the
    destinations naming no types are left out); to `plain`, named, it goes whatever its
    filters."""
    watched = watch(always(500))
    send(watched, 1)
    (dead,) = watched.raised(OperationalType.DELIVERY_DEAD)
    operator = Operator(watched.server)
    by_filter = operator.json("replay", "--type", OperationalType.DELIVERY_DEAD, "--yes")
    assert by_filter["by_destination"] == {"ops": 1}
    wait_until(lambda: len(watched.sinks["ops"].of(dead["id"])) == 2, timeout=30)
    named = operator.json(
        "replay", "--type", OperationalType.DELIVERY_DEAD, "--destination", "plain", "--yes"
    )
    assert named["by_destination"] == {"plain": 1}
    wait_until(lambda: len(watched.sinks["plain"].of(dead["id"])) == 1, timeout=30)
    (request,) = watched.sinks["plain"].of(dead["id"])
    assert Webhook(watched.keys["plain"]).verify(request.body, request.headers) == dead
    assert watched.sinks["failing"].of(dead["id"]) == []


def test_a_pause_left_by_a_stopped_process_is_ended_by_the_next_ones_check(
    watch: Callable[..., Watched],
) -> None:
    """Stopped while `failing` was paused, then started again with the sink healed: the new
    process's breaker never paused, yet its periodic check sees an attempt taken since the
    pause and ends it, once."""
    failing = [True]
    watched = watch(lambda _, __: (500 if failing[0] else 200, {}))
    send(watched, TRIP_AFTER // 2 + 1)
    (paused,) = watched.raised(OperationalType.DESTINATION_PAUSED)
    watched.server.stop()
    failing[0] = False
    watched.server.start()
    (healed,) = send(watched, 1)
    wait_until(lambda: healed in watched.sinks["failing"].ids(), timeout=30)
    (resumed,) = watched.raised(OperationalType.DESTINATION_RESUMED)
    assert resumed["data"]["destination"] == "failing"
    assert resumed["data"]["since"] == paused["data"]["since"]
    assert len(watched.sent(OperationalType.DESTINATION_PAUSED)) == 1


# Windows waited after the first `receiver.delivery.dead`: before the fix, each raised one more
# about `ops`, the last one's delivery to it dying.
WINDOWS_WATCHED = 3


def test_a_down_subscriber_of_the_services_own_events_is_not_told_their_deliveries_died(
    watch: Callable[..., Watched],
) -> None:
    """`ops` (naming `receiver.*`) answers 500, each delivery's one attempt: the
    `receiver.delivery.dead` about `failing` dies on its way to it, and no
    `receiver.delivery.dead` about `ops` follows, window after window (each would be one
    more to die there). Not 410, which would disable `ops` after the first death there, so
    that no other could follow whatever the alerts did."""
    watched = watch(always(500), forward_retry_schedule=ONE_ATTEMPT)
    watched.sinks["ops"].respond = always(500)
    send(watched, 2)
    (event,) = watched.raised(OperationalType.DELIVERY_DEAD)
    assert event["data"]["destination"] == "failing"

    def states() -> list[str]:
        shown = watched.rivya.admin(f"/events/{event['id']}").json()
        return [delivery["state"] for delivery in shown["deliveries"]]

    wait_until(lambda: states() == ["dead"], timeout=30, what=lambda: f"dead at ops: {states()}")
    time.sleep(WINDOWS_WATCHED * COALESCE_SECONDS + LATER_CHECKS * CHECK_SECONDS)
    assert [e["id"] for e in watched.stored(OperationalType.DELIVERY_DEAD)] == [event["id"]]
    assert [e["id"] for e in watched.sent(OperationalType.DELIVERY_DEAD)] == [event["id"]]
