"""A downstream that misbehaves in every way we know of, on each attempt by a seeded draw:
no event is lost, none is sent more than the retry schedule allows, and none is delivered
twice unless the downstream took longer than our timeout to say yes. Two destinations, each
with chaos of its own, are held to this each."""

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Rivya
from tests.helpers import (
    RESET,
    Downstream,
    Received,
    ReceiverProcess,
    make_event,
    new_secret,
    wait_until,
    write_destinations,
)
from tests.reliability.conftest import Figures

EVENTS = 200
# A destination each, with chaos of its own.
SEEDS = {"default": 20261122, "mirror": 20261123}
TIMEOUT_SECONDS = 1.0
RETRY_SCHEDULE = "0.1,0.2,0.3,0.4"
MAX_ATTEMPTS = 5
# Each attempt's answer, with its weight.
ANSWERS = {
    "ok": 30,
    "ok_slowly": 5,  # within our timeout
    "ok_too_late": 6,  # after our timeout: the downstream took it, we cannot know
    "error_5xx": 20,
    "reset": 10,
    "rate_limited": 8,  # 429 with Retry-After: 1
    "gone": 3,  # 410: stop trying
}
# Every 40th to 49th request of each hundred meets a burst of 503s, whatever the draw.
BURST = range(40, 50)


class Chaos:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.answers: defaultdict[str, list[str]] = defaultdict(list)
        self.requests = 0
        self._lock = threading.Lock()

    def respond(self, request: Received, earlier: int) -> tuple[int, dict[str, str]]:
        event_id = request.headers["webhook-id"]
        draw = random.Random(f"{self.seed}:{event_id}:{earlier}")
        answer = draw.choices(list(ANSWERS), weights=list(ANSWERS.values()))[0]
        with self._lock:
            self.requests += 1
            if self.requests % 100 in BURST:
                answer = "error_5xx"
            self.answers[event_id].append(answer)
        if answer == "ok_slowly":
            time.sleep(TIMEOUT_SECONDS / 3)
        if answer == "ok_too_late":
            time.sleep(TIMEOUT_SECONDS * 1.5)
        return {
            "ok": (200, {}),
            "ok_slowly": (204, {}),
            "ok_too_late": (200, {}),
            "error_5xx": (draw.choice([500, 502, 503]), {}),
            "reset": (RESET, {}),
            "rate_limited": (429, {"retry-after": "1"}),
            "gone": (410, {}),
        }[answer]


def test_downstream_chaos_loses_nothing_and_retries_within_bounds(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    rivya: Rivya,
    figures: Figures,
    tmp_path: Path,
) -> None:
    chaos = {name: Chaos(seed) for name, seed in SEEDS.items()}
    sinks = {name: own_downstream(each.respond) for name, each in chaos.items()}
    secret = new_secret()
    rivya.sensitive.add(secret)
    mirror = {
        "name": "mirror",
        "url": sinks["mirror"].url,
        "signing_secrets": secret,
        "max_in_flight": 16,
    }
    process = start_server(
        forward_url=sinks["default"].url,
        destinations_file=write_destinations(tmp_path / "destinations.toml", mirror),
        forward_timeout_seconds=str(TIMEOUT_SECONDS),
        forward_retry_schedule=RETRY_SCHEDULE,
        forward_lease_seconds="5",
        forward_concurrency="16",
    )
    sender = Rivya(process, rivya.secret, rivya.sensitive)
    events = [make_event() for _ in range(EVENTS)]
    assert all(sender.send(event).status_code == 200 for event in events)
    wait_until(
        lambda: sender.admin("/deliveries?state=pending").json()["deliveries"] == [],
        timeout=90,
        what="every delivery to end",
    )

    for name in chaos:
        _check(name, chaos[name], sinks[name], sender, [event["id"] for event in events], figures)


def _check(
    name: str,
    chaos: Chaos,
    downstream: Downstream,
    sender: Rivya,
    event_ids: list[str],
    figures: Figures,
) -> None:
    states: Counter[str] = Counter()
    for event_id in event_ids:
        (delivery,) = [
            delivery
            for delivery in sender.admin(f"/events/{event_id}").json()["deliveries"]
            if delivery["destination"] == name
        ]
        answers = chaos.answers[event_id]
        received = downstream.of(event_id)
        states[delivery["state"]] += 1
        # Every request the downstream saw is an attempt on record, and no more.
        assert delivery["attempts"] == len(received) == len(answers), event_id
        assert len(answers) <= MAX_ATTEMPTS
        accepted_in_time = {"ok", "ok_slowly"} & set(answers)
        if delivery["state"] == "delivered":
            assert answers[-1] in accepted_in_time
            assert len(accepted_in_time) == 1
            assert answers.count(answers[-1]) == 1
        else:
            assert delivery["state"] == "dead"
            assert not accepted_in_time
            assert answers[-1] == "gone" or len(answers) == MAX_ATTEMPTS
        # A 429 asked for a second's pause; the next attempt honoured it.
        for index, answer in enumerate(answers[:-1]):
            if answer == "rate_limited":
                assert received[index + 1].at - received[index].at >= 0.95

    drawn = Counter(answer for answers in chaos.answers.values() for answer in answers)
    assert all(drawn[answer] > 0 for answer in ANSWERS), drawn
    duplicates = sum(
        1
        for answers in chaos.answers.values()
        if sum(a in {"ok", "ok_slowly", "ok_too_late"} for a in answers) > 1
    )
    figures.add(
        f"downstream chaos, destination {name}",
        runs=1,
        events=EVENTS,
        requests=chaos.requests,
        delivered=states["delivered"],
        dead_letters=states["dead"],
        lost=EVENTS - states["delivered"] - states["dead"],
        duplicated_after_late_2xx=duplicates,
    )
