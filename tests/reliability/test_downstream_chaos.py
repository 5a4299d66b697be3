"""A downstream that misbehaves in every way we know of, on each attempt by a seeded draw:
no event is lost, none is sent more than the retry schedule allows, and none is delivered
twice unless the downstream took longer than our timeout to say yes. A 410 disables the
destination: the test, as its operator, enables it again each time, and no attempt starts
there while it is disabled. Two destinations, each with chaos of its own, are held to this
each."""

import asyncio
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from receiver.store.destination_states import (
    BY_GONE,
    disabled_destinations_in,
    enable_destination,
)
from receiver.store.tables import attempts, deliveries
from tests.conftest import Rivya
from tests.databases import reading
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
    "gone": 3,  # 410: stop trying, and disable the destination
}
# Every 40th to 49th request of each hundred meets a burst of 503s, whatever the draw.
BURST = range(40, 50)
# How often the operator looks for a disabled destination, and the forwarder's poll, which
# is when it obeys an enable: both short, so that the run's dozen or so disables cost little
# (at the default poll, 0.5 s, each added up to half a second: a run took 18 s, not 13).
LOOK_SECONDS = 0.05
POLL_SECONDS = "0.1"


class Span(NamedTuple):
    """A time a destination was disabled: from when the database says, to just before the
    operator enabled it."""

    destination: str
    disabled_at: datetime
    disabled_by: str
    reason: str | None
    enabled_at: datetime


class Reenabler:
    """The operator who, whenever a destination is disabled, enables it again, through the
    store's own `enable_destination` (what every front end's enable calls)."""

    def __init__(self, database_url: str) -> None:
        self.spans: list[Span] = []
        self._database_url = database_url
        self._done = threading.Event()
        self._failure: Exception | None = None
        self._thread = threading.Thread(target=self._main)
        self._thread.start()

    def stop(self) -> list[Span]:
        """Stop, after one last look; every span it ended."""
        self._done.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the operator did not stop"
        if self._failure is not None:
            raise self._failure
        return self.spans

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception as exc:  # noqa: BLE001 - raised again in the test, by stop()
            self._failure = exc

    async def _run(self) -> None:
        engine = create_async_engine(self._database_url, pool_size=1)
        try:
            while True:
                last = self._done.is_set()
                async with engine.begin() as connection:
                    disabled = await disabled_destinations_in(connection)
                for name in disabled:
                    # Before the enable commits: any attempt started after it is later.
                    enabled_at = datetime.now(UTC)
                    async with engine.begin() as connection:
                        ended = await enable_destination(connection, name)
                    if ended is not None:
                        self.spans.append(Span(*ended, enabled_at))
                if last:
                    return
                await asyncio.sleep(LOOK_SECONDS)
        finally:
            await engine.dispose()


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
        forward_poll_seconds=POLL_SECONDS,
    )
    sender = Rivya(process, rivya.secret, rivya.sensitive)
    database_url = process.env["RECEIVER_DATABASE_URL"]
    operator = Reenabler(database_url)
    try:
        events = [make_event() for _ in range(EVENTS)]
        assert all(sender.send(event).status_code == 200 for event in events)

        # Counted by how they ended: a delivery held while its destination is disabled is
        # listed as neither pending nor ended (as disabled).
        def ended() -> int:
            return sum(
                len(sender.admin(f"/deliveries?state={state}&limit=1000").json()["deliveries"])
                for state in ("delivered", "dead")
            )

        wait_until(
            lambda: ended() == EVENTS * len(chaos),
            timeout=90,
            what=lambda: f"every delivery to end: {ended()}",
        )
    finally:
        spans = operator.stop()

    for name in chaos:
        _check(name, chaos[name], sinks[name], sender, [event["id"] for event in events], figures)
        spans_of = [span for span in spans if span.destination == name]
        _check_disabled(name, chaos[name], spans_of, database_url, figures)


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
        assert "gone" not in answers[:-1], "an attempt after a 410"
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


def _check_disabled(
    name: str, chaos: Chaos, spans: list[Span], database_url: str, figures: Figures
) -> None:
    """The destination was disabled by its 410s alone, and started no attempt while it was."""
    gone = sum(answers.count("gone") for answers in chaos.answers.values())
    assert 0 < len(spans) <= gone, (len(spans), gone)
    assert {(span.disabled_by, span.reason) for span in spans} == {(BY_GONE, "410 Gone")}
    with reading(database_url) as db:
        started = db.scalars(
            sa.select(attempts.c.attempted_at)
            .join(deliveries, deliveries.c.id == attempts.c.delivery_id)
            .where(deliveries.c.destination == name)
        ).all()
    during = [
        (span, moment)
        for span in spans
        for moment in started
        if span.disabled_at < moment < span.enabled_at
    ]
    assert during == [], during
    figures.add(f"downstream chaos, destination {name}", disabled_by_410=len(spans))
