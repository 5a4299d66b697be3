"""A subscriber answering `410 Gone` disables its destination, through real `receiver serve`
processes and real sinks, on both backends: nothing more is sent to it, its other pending
deliveries are kept and shown `disabled` everywhere (deliveries list, stats, destinations
list, the admin API, /metrics), the 410 delivery is dead, a neighbour keeps receiving, the
state holds across a restart, and `receiver destinations enable` sends each waiting delivery
once. On PostgreSQL, two replicas obey one 410 and both resume after enable."""

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import Rivya
from tests.forward.test_rate_limits import store_backlog
from tests.helpers import (
    Downstream,
    Operator,
    Received,
    ReceiverProcess,
    always,
    make_event,
    only,
    run_cli,
    wait_until,
    write_destinations,
)
from tests.test_metrics import QUICK, scrape

# Events queued to billing after its 410: each must wait, then be delivered once.
WAITING = 5
# Long enough for many claims (the poll is 0.5 s): a disabled lane would have sent by now.
SETTLE_SECONDS = 2.0


class Gone:
    """Billing's sink: 410 Gone while `gone` is set, 200 after."""

    def __init__(self) -> None:
        self.gone = threading.Event()
        self.gone.set()

    def __call__(self, _: Received, __: int) -> tuple[int, dict[str, str]]:
        return (410 if self.gone.is_set() else 200), {}


class Setup:
    def __init__(
        self,
        start_server: Callable[..., ReceiverProcess],
        rivya: Rivya,
        own_downstream: Callable[..., Downstream],
        new_secrets: Callable[[], str],
        tmp_path: Path,
    ) -> None:
        self.answer = Gone()
        self.healthy, self.billing = own_downstream(), own_downstream(self.answer, 0.1)
        table = {
            "name": "billing",
            "url": self.billing.url,
            "signing_secrets": new_secrets(),
            "max_in_flight": 1,
        }
        self.settings = {
            "forward_url": self.healthy.url,
            "destinations_file": write_destinations(tmp_path / "d.toml", table),
            "metrics_refresh_seconds": QUICK,
        }
        self.start_server, self.rivya = start_server, rivya

    def start(self) -> ReceiverProcess:
        return self.start_server(**self.settings)

    def send(self, server: ReceiverProcess, n: int) -> list[str]:
        sender = Rivya(server, self.rivya.secret, self.rivya.sensitive)
        events = [make_event() for _ in range(n)]
        for event in events:
            assert sender.send(event).status_code == 200
        return [event["id"] for event in events]


@pytest.fixture
def setup(
    start_server: Callable[..., ReceiverProcess],
    rivya: Rivya,
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    tmp_path: Path,
) -> Setup:
    return Setup(start_server, rivya, own_downstream, new_secrets, tmp_path)


def ids(operator: Operator, state: str, destination: str = "billing") -> list[str]:
    listed = operator.json("deliveries", "list", "--state", state, "--destination", destination)
    assert {d["state"] for d in listed["deliveries"]} <= {state}
    return sorted(d["event_id"] for d in listed["deliveries"])


def entry_of(listing: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (entry,) = [e for e in listing if e["destination"] == name]
    return entry


def test_a_410_disables_billing_its_pending_wait_as_disabled_and_enable_sends_each_once(
    setup: Setup,
) -> None:
    server = setup.start()
    (first,) = setup.send(server, 1)
    wait_until(lambda: "destination_disabled" in server.output(), timeout=20, what="disabled")
    waiting = setup.send(server, WAITING)
    wait_until(lambda: len(setup.healthy.received) == 1 + WAITING, timeout=20, what="default")
    time.sleep(SETTLE_SECONDS)
    assert setup.billing.ids() == [first], "a disabled destination was sent more"

    operator = Operator(server)
    assert ids(operator, "disabled") == sorted(waiting)
    assert ids(operator, "dead") == [first]
    assert ids(operator, "pending") == []
    assert ids(operator, "disabled", "default") == []
    assert operator.json("stats")["deliveries"]["disabled"] == WAITING
    billing = entry_of(operator.json("destinations", "list")["destinations"], "billing")
    assert (billing["disabled"], billing["pending"], billing["dead"]) == (WAITING, 0, 1)
    assert (billing["disabled_by"], billing["disabled_reason"]) == ("410", "410 Gone")
    assert billing["disabled_at"] is not None
    shown = operator.run("destinations", "list")
    assert "billing (disabled)" in shown
    assert "Enable it: receiver destinations enable billing" in shown
    default = entry_of(operator.json("destinations", "list")["destinations"], "default")
    assert (default["disabled_at"], default["disabled"]) == (None, 0)
    admin = Rivya(server, setup.rivya.secret, setup.rivya.sensitive)
    listed = admin.admin("/deliveries", params={"state": "disabled"}).json()["deliveries"]
    assert sorted(d["event_id"] for d in listed) == sorted(waiting)
    gauge = ("receiver_deliveries", (("destination", "billing"), ("state", "disabled")))
    wait_until(lambda: scrape(server.url).get(gauge) == WAITING, timeout=10, what="the gauge")
    counted = admin.admin("/destinations").json()["destinations"]
    assert entry_of(counted, "billing")["disabled_by"] == "410"
    disabled_lines = [
        orjson.loads(line)
        for line in server.output().splitlines()
        if '"event":"destination_disabled"' in line
    ]
    assert [(line["destination"], line["reason"]) for line in disabled_lines] == [
        ("billing", "410 Gone")
    ]

    # The state is the database's: a restarted server obeys it.
    server.stop()
    server = setup.start()
    later = setup.send(server, 1)
    wait_until(lambda: len(setup.healthy.received) == 2 + WAITING, timeout=20, what="default")
    time.sleep(SETTLE_SECONDS)
    assert setup.billing.ids() == [first]

    setup.answer.gone.clear()
    operator = Operator(server)
    said = run_cli("destinations", "enable", "billing", env=server.env, cwd=server.workdir)
    assert said.returncode == 0, said.stderr
    assert said.stdout.startswith("Enabled billing (disabled since ")
    assert ", by 410: 410 Gone)" in said.stdout
    audit = [orjson.loads(line) for line in said.stderr.splitlines() if '"audit"' in line]
    assert [(a["who"], a["what"], a["destination"], a["count"]) for a in audit] == [
        ("cli", "enable_destination", "billing", 1)
    ]
    expected = sorted([*waiting, *later])
    wait_until(lambda: len(setup.billing.received) == 1 + len(expected), timeout=20)
    time.sleep(SETTLE_SECONDS)
    sent = Counter(setup.billing.ids())
    assert sent == Counter([first, *expected]), "each waiting delivery is sent once"
    assert ids(operator, "delivered") == expected
    assert ids(operator, "disabled") == []
    assert ids(operator, "dead") == [first]
    again = operator.run("destinations", "enable", "billing")
    assert again.strip() == "billing was not disabled: nothing changed."


@pytest.mark.postgresql_only
def test_two_replicas_obey_one_410_and_both_resume_after_enable(setup: Setup) -> None:
    """The first replica's 410 disables billing for the second too: after it, neither
    sends billing anything while both keep forwarding to default; after enable both claim
    billing's waiting deliveries, each sent once."""
    replicas = [setup.start(), setup.start()]
    (first,) = setup.send(replicas[0], 1)
    wait_until(
        lambda: any("destination_disabled" in r.output() for r in replicas),
        timeout=20,
        what="disabled",
    )
    waiting = [event_id for r in replicas for event_id in setup.send(r, 2 * WAITING)]
    wait_until(lambda: len(setup.healthy.received) == 1 + len(waiting), timeout=20)
    time.sleep(SETTLE_SECONDS)
    assert setup.billing.ids() == [first], "the other replica sent to a disabled destination"
    said = [r for r in replicas if "destination_disabled" in r.output()]
    assert len(said) == 1, "said by the one replica that disabled it"

    setup.answer.gone.clear()
    Operator(replicas[1]).run("destinations", "enable", "billing")
    wait_until(lambda: len(setup.billing.received) == 1 + len(waiting), timeout=30)
    time.sleep(SETTLE_SECONDS)
    assert Counter(setup.billing.ids()) == Counter([first, *waiting])
    for replica in replicas:
        delivered = [
            line
            for line in replica.output().splitlines()
            if '"destination":"billing"' in line and '"delivery_state":"delivered"' in line
        ]
        assert delivered, "a replica did not resume billing"


def test_a_410_from_a_replays_other_url_disables_nothing(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    rivya: Rivya,
) -> None:
    """`replay --to` a URL answering 410: that delivery is dead, but the answer is not the
    destination's, so `default` is not disabled and the next event reaches its own sink."""
    production, elsewhere = own_downstream(), own_downstream(always(410))
    server = start_server(forward_url=production.url)
    sender = Rivya(server, rivya.secret, rivya.sensitive)
    first, later = make_event(), make_event()
    assert sender.send(first).status_code == 200
    wait_until(lambda: production.ids() == [first["id"]], timeout=10)
    operator = Operator(server)
    operator.run("replay", first["id"], "--to", elsewhere.url)
    wait_until(lambda: ids(operator, "dead", "default") == [first["id"]], timeout=10)
    assert elsewhere.ids() == [first["id"]]
    assert sender.send(later).status_code == 200
    wait_until(
        lambda: production.ids() == [first["id"], later["id"]], timeout=10, what="the next event"
    )
    assert "destination_disabled" not in server.output()
    (listed,) = operator.json("destinations", "list")["destinations"]
    assert (listed["destination"], listed["disabled_at"]) == ("default", None)


# How long after `destinations disable` returns an attempt may still start: on PostgreSQL
# the NOTIFY wakes the forwarder at once (the margin is a loaded machine's scheduling); on
# SQLite its next claim comes within a poll (0.5 s by default).
OBEYED_WITHIN = {"postgresql": 0.3, "sqlite": 0.5 + 0.3}


def test_a_disable_hands_back_the_claims_a_full_lane_held(
    backend: str,
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    rivya: Rivya,
    tmp_path: Path,
) -> None:
    """A lane of width 2, full (the sink takes 2 s) and holding 2 claims, disabled by the
    CLI: no attempt starts later than OBEYED_WITHIN after the command returned."""
    sink = own_downstream(always(200), 2.0)
    table = {"name": "slow", "url": sink.url, "signing_secrets": new_secrets()}
    file = write_destinations(tmp_path / "d.toml", table | {"max_in_flight": 2})
    settings = only(file) | {"forward_timeout_seconds": "10", "forward_lease_seconds": "60"}
    server = start_server(**settings)
    store_backlog(Rivya(server, rivya.secret, rivya.sensitive), 8)
    wait_until(lambda: len(sink.received) >= 2, timeout=10)
    time.sleep(0.3)  # the two behind them are claimed
    Operator(server).run("destinations", "disable", "slow")
    disabled = time.monotonic()
    time.sleep(2.5)  # both attempts in flight end
    late = [r.at - disabled for r in sink.received if r.at > disabled + OBEYED_WITHIN[backend]]
    assert late == [], "an attempt started after the disable was obeyed"
