"""Reloading the destinations file without a restart (receiver/reloading.py), through real
`receiver serve` and `worker` processes, real sinks on loopback and SIGHUP, and the
`receiver destinations reload` command that says what a reload would change."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook, WebhookVerificationError

from receiver.store import tables
from tests.conftest import Rivya, Sensitive
from tests.databases import reading
from tests.forward.test_rate_limits import store_backlog
from tests.helpers import (
    HTTP,
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

RELOAD_EVENTS = ('"event":"destinations_reloaded"', '"event":"destinations_reload_failed"')


def reload(server: ReceiverProcess) -> dict[str, Any]:
    """SIGHUP `server`; the log line its reload wrote."""
    before = len(_reload_lines(server))
    os.kill(server.pid, signal.SIGHUP)
    wait_until(lambda: len(_reload_lines(server)) > before, timeout=15, what="a reload's line")
    lines = _reload_lines(server)
    assert len(lines) == before + 1, lines
    parsed: dict[str, Any] = orjson.loads(lines[-1])
    return parsed


def _reload_lines(server: ReceiverProcess) -> list[str]:
    return [
        line
        for line in server.output().splitlines()
        if any(event in line for event in RELOAD_EVENTS)
    ]


def _applied(server: ReceiverProcess) -> dict[str, dict[str, Any]]:
    with reading(server.env["RECEIVER_DATABASE_URL"]) as db:
        rows = db.execute(sa.select(tables.applied_destinations))
        return {row.destination: row.description for row in rows}


def _sent_to(server: ReceiverProcess, destination: str) -> set[str]:
    with reading(server.env["RECEIVER_DATABASE_URL"]) as db:
        query = sa.select(tables.deliveries.c.event_id).where(
            tables.deliveries.c.destination == destination
        )
        return set(db.execute(query).scalars())


def test_sighup_adds_a_destination_that_receives_new_events_within_a_second(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    tmp_path: Path,
) -> None:
    old_sink, new_sink = own_downstream(), own_downstream()
    old = {"name": "old", "url": old_sink.url, "signing_secrets": new_secrets()}
    new = {"name": "new", "url": new_sink.url, "signing_secrets": new_secrets()}
    file = tmp_path / "destinations.toml"
    server = start_server(**only(write_destinations(file, old)))
    rivya = Rivya(server, secrets_in_use[0], sensitive)
    before = make_event()
    assert rivya.send(before).status_code == 200
    wait_until(lambda: old_sink.ids() == [before["id"]], timeout=10)
    assert set(_applied(server)) == {"old"}

    write_destinations(file, old, new)
    signalled = time.monotonic()
    line = reload(server)
    assert (line["added"], line["destinations"]) == (["new"], ["old", "new"])
    assert "removed" not in line or line["removed"] == []
    after = make_event()
    assert rivya.send(after).status_code == 200
    wait_until(lambda: new_sink.ids() == [after["id"]], timeout=5)
    assert new_sink.received[0].at - signalled < 1.0, "received within a second of the reload"
    wait_until(lambda: sorted(old_sink.ids()) == sorted([before["id"], after["id"]]), timeout=5)
    applied = _applied(server)
    assert set(applied) == {"old", "new"}
    assert applied["new"]["url"] == new_sink.url
    assert len(applied["new"]["signing_secrets"][0]) == 12  # a fingerprint, not the secret


def test_500_events_sent_during_a_reload_are_each_delivered_once_none_lost(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    tmp_path: Path,
) -> None:
    """The old destination receives every event once; the new one, each event stored after
    the swap once (everything sent after the reload's line, nothing answered before the
    signal)."""
    old_sink, new_sink = own_downstream(), own_downstream()
    old = {"name": "old", "url": old_sink.url, "signing_secrets": new_secrets()}
    new = {"name": "new", "url": new_sink.url, "signing_secrets": new_secrets()}
    file = tmp_path / "destinations.toml"
    server = start_server(**only(write_destinations(file, old)))
    rivya = Rivya(server, secrets_in_use[0], sensitive)
    events = [make_event() for _ in range(500)]
    started: dict[str, float] = {}
    answered: dict[str, float] = {}

    def send(event: dict[str, Any]) -> int:
        started[event["id"]] = time.monotonic()
        status = rivya.send(event).status_code
        answered[event["id"]] = time.monotonic()
        return status

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send, event) for event in events]
        wait_until(lambda: sum(f.done() for f in futures) >= 150, timeout=60)
        write_destinations(file, old, new)
        signalled = time.monotonic()
        assert reload(server)["added"] == ["new"]
        reloaded = time.monotonic()
        statuses = [future.result() for future in futures]
    assert statuses == [200] * len(events)
    everything = {event["id"] for event in events}
    wait_until(lambda: len(old_sink.ids()) >= len(everything), timeout=90)
    to_new = _sent_to(server, "new")
    wait_until(lambda: len(new_sink.ids()) >= len(to_new), timeout=60)
    time.sleep(1)  # anything sent twice would arrive now
    assert sorted(old_sink.ids()) == sorted(everything), "each once, none lost"
    assert sorted(new_sink.ids()) == sorted(to_new), "each stored after the swap, once"
    assert {e for e, at in started.items() if at > reloaded} <= to_new
    assert not {e for e, at in answered.items() if at < signalled} & to_new
    assert 0 < len(to_new) < len(everything)


@pytest.mark.any_backend
def test_a_rotated_secret_signs_what_is_sent_after_the_reload(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    tmp_path: Path,
) -> None:
    sink = own_downstream()
    first, second = new_secrets(), new_secrets()
    file = tmp_path / "destinations.toml"
    table = {"name": "sink", "url": sink.url}
    server = start_server(**only(write_destinations(file, table | {"signing_secrets": first})))
    rivya = Rivya(server, secrets_in_use[0], sensitive)
    assert rivya.send(make_event()).status_code == 200
    wait_until(lambda: len(sink.received) == 1, timeout=10)
    Webhook(first).verify(sink.received[0].body, sink.received[0].headers)

    write_destinations(file, table | {"signing_secrets": second})
    line = reload(server)
    assert line["changed"] == {"sink": ["signing secrets rotated"]}
    assert rivya.send(make_event()).status_code == 200
    wait_until(lambda: len(sink.received) == 2, timeout=10)
    rotated = sink.received[1]
    Webhook(second).verify(rotated.body, rotated.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(first).verify(rotated.body, rotated.headers)


BROKEN = {
    "bad TOML": ("[[destinations]\nname = ", "not valid TOML"),
    "a bad key": (None, "destination 'sink': max_in_flight:"),
    "a missing secret variable": (None, "destination 'sink': signing_secrets_env: "),
}


@pytest.mark.any_backend
@pytest.mark.parametrize("mistake", list(BROKEN))
def test_a_broken_file_changes_nothing_and_logs_one_line_naming_the_mistake(
    mistake: str,
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    tmp_path: Path,
) -> None:
    sink = own_downstream()
    secret = new_secrets()
    file = tmp_path / "destinations.toml"
    table = {"name": "sink", "url": sink.url, "signing_secrets": secret}
    server = start_server(**only(write_destinations(file, table)))
    text, expected = BROKEN[mistake]
    if text is not None:
        file.write_text(text + secret)
    elif mistake == "a bad key":
        write_destinations(file, table | {"max_in_flight": 0})
    else:
        write_destinations(file, {"name": "sink", "url": sink.url, "signing_secrets_env": "NOPE"})
    before = server.output()

    line = reload(server)
    assert line["event"] == "destinations_reload_failed"
    assert line["reason"].startswith(f"RECEIVER_DESTINATIONS_FILE {file}: "), line
    assert expected in line["reason"]
    assert secret.removeprefix("whsec_") not in line["reason"]
    written = server.output().removeprefix(before).splitlines()
    (naming,) = [line for line in written if str(file) in line]  # one line, and only one
    assert orjson.loads(naming) == line
    rivya = Rivya(server, secrets_in_use[0], sensitive)
    event = make_event()
    assert rivya.send(event).status_code == 200
    wait_until(lambda: sink.ids() == [event["id"]], timeout=10)
    Webhook(secret).verify(sink.received[0].body, sink.received[0].headers)


@pytest.mark.any_backend
def test_a_destination_removed_by_a_reload_leaves_its_pending_deliveries_orphaned(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    tmp_path: Path,
) -> None:
    keep, gone = own_downstream(), own_downstream(always(503))
    tables_ = [
        {"name": "keep", "url": keep.url, "signing_secrets": new_secrets()},
        {"name": "gone", "url": gone.url, "signing_secrets": new_secrets()},
    ]
    file = tmp_path / "destinations.toml"
    # A first retry a minute away: each failed delivery to `gone` waits, pending.
    server = start_server(**only(write_destinations(file, *tables_)), forward_retry_schedule="60")
    rivya = Rivya(server, secrets_in_use[0], sensitive)
    events = [make_event() for _ in range(3)]
    assert all(rivya.send(event).status_code == 200 for event in events)
    wait_until(lambda: len(gone.received) == 3 and len(keep.received) == 3, timeout=10)

    write_destinations(file, tables_[0])
    assert reload(server)["removed"] == ["gone"]
    orphaned = rivya.admin("/deliveries?state=orphaned&destination=gone").json()["deliveries"]
    assert sorted(d["event_id"] for d in orphaned) == sorted(e["id"] for e in events)
    listed = {d["destination"]: d for d in rivya.admin("/destinations").json()["destinations"]}
    assert (listed["gone"]["configured"], listed["gone"]["orphaned"]) == (False, 3)
    assert set(_applied(server)) == {"keep"}
    after = make_event()
    assert rivya.send(after).status_code == 200
    wait_until(lambda: len(keep.received) == 4, timeout=10)
    assert _sent_to(server, "gone") == {e["id"] for e in events}, "no delivery for it now"


def test_destinations_reload_prints_what_a_reload_would_change_and_signals_nothing(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    tmp_path: Path,
) -> None:
    sink = own_downstream()
    kept = {"name": "kept", "url": sink.url, "signing_secrets": new_secrets()}
    gone = {"name": "gone", "url": sink.url, "signing_secrets": new_secrets()}
    file = tmp_path / "destinations.toml"
    server = start_server(**only(write_destinations(file, kept, gone)))
    operator = Operator(server)
    assert operator.run("destinations", "reload").strip() == (
        "No change: the file is what the service applied last."
    )
    assert operator.json("destinations", "reload") == {"added": [], "removed": [], "changed": {}}

    added = {"name": "added", "url": sink.url, "signing_secrets": new_secrets()}
    rotated = kept | {"signing_secrets": new_secrets(), "max_in_flight": 4}
    write_destinations(file, rotated, added)
    text = operator.run("destinations", "reload")
    assert text.splitlines() == [
        "added:   added",
        "removed: gone (its pending deliveries orphaned)",
        "changed: kept: max_in_flight, signing secrets rotated",
    ]
    expected = {
        "added": ["added"],
        "removed": ["gone"],
        "changed": {"kept": ["max_in_flight", "signing secrets rotated"]},
    }
    assert operator.json("destinations", "reload") == expected
    assert _reload_lines(server) == [], "the command signals nothing"
    assert set(_applied(server)) == {"kept", "gone"}

    file.write_text('[[destinations]]\nname = "x"\n')
    file.chmod(0o600)
    error = operator.run("destinations", "reload", code=1)
    assert error.strip() == (
        f"Error: RECEIVER_DESTINATIONS_FILE {file}: destination 'x': url: is required"
    )

    write_destinations(file, rotated, added)
    reload(server)
    assert operator.json("destinations", "reload") == {"added": [], "removed": [], "changed": {}}
    assert set(_applied(server)) == {"kept", "added"}


@pytest.mark.any_backend
def test_worker_reloads_on_sighup(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    tmp_path: Path,
) -> None:
    """`serve --no-forwarder` stores, `worker` forwards: each reloads on its own SIGHUP."""
    old_sink, new_sink = own_downstream(), own_downstream()
    old = {"name": "old", "url": old_sink.url, "signing_secrets": new_secrets()}
    new = {"name": "new", "url": new_sink.url, "signing_secrets": new_secrets()}
    file = tmp_path / "destinations.toml"
    write_destinations(file, old)
    server = start_server("serve", "--no-forwarder", **only(str(file)))
    worker = start_server("worker", **only(str(file)))
    write_destinations(file, old, new)
    assert reload(server)["added"] == ["new"]
    assert reload(worker)["added"] == ["new"]
    event = make_event()
    assert Rivya(server, secrets_in_use[0], sensitive).send(event).status_code == 200
    wait_until(lambda: new_sink.ids() == [event["id"]] == old_sink.ids(), timeout=10)
    assert worker.running, "SIGHUP no longer ends a worker"
    assert HTTP.get(f"{server.url}/readyz").status_code == 200


class Concurrency:
    """A sink's answer that takes `seconds`, counting the most requests it held at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.now = self.most = 0
        self._lock = threading.Lock()

    def __call__(self, _: Received, __: int) -> tuple[int, dict[str, str]]:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.seconds)
        with self._lock:
            self.now -= 1
        return 200, {}


@pytest.mark.any_backend
def test_a_destination_removed_and_added_back_in_flight_keeps_its_width(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    tmp_path: Path,
) -> None:
    """Removed by one SIGHUP and added back by the next while its 2 attempts are in
    flight: the lane it gets back is the one still counting them, so the sink never holds
    more than `max_in_flight = 2` at once (a new lane started 2 more beside them)."""
    answer = Concurrency(3.0)
    slow = {"name": "slow", "url": own_downstream(answer).url, "signing_secrets": new_secrets()}
    other = {"name": "other", "url": own_downstream().url, "signing_secrets": new_secrets()}
    file = tmp_path / "destinations.toml"
    settings = only(write_destinations(file, slow | {"max_in_flight": 2}, other))
    settings |= {"forward_timeout_seconds": "10", "forward_lease_seconds": "60"}
    server = start_server("serve", "--no-forwarder", **settings)
    store_backlog(Rivya(server, secrets_in_use[0], sensitive), 8)
    worker = start_server("worker", **settings)
    wait_until(lambda: answer.now == 2, timeout=10)
    write_destinations(file, other)
    assert reload(worker)["removed"] == ["slow"]
    write_destinations(file, slow | {"max_in_flight": 2}, other)
    assert reload(worker)["added"] == ["slow"]
    time.sleep(1.0)  # the new lane's claims, were it new, would have started by now
    assert answer.most == 2, f"{answer.most} in flight at once"


@pytest.mark.any_backend
@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_sighup_during_a_graceful_stop_does_not_cut_it_short(
    command: str,
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
) -> None:
    """SIGTERM while an attempt is in flight, then SIGHUP: the process still stops as a
    normal stop does (its usual exit, the attempt's outcome written, `forwarder_stopped`), where
    SIGHUP's default action, back once the reloader let go of it, ended it at once."""
    sink = own_downstream(always(200), 2.0)
    settings = {"forward_url": sink.url, "forward_timeout_seconds": "10"}
    settings |= {"forward_lease_seconds": "60"}
    process = start_server(command, **settings)
    # A worker's events are stored by a server that does not forward them.
    stores = start_server("serve", "--no-forwarder", **settings) if command == "worker" else None
    store_backlog(Rivya(stores or process, secrets_in_use[0], sensitive), 1)
    wait_until(lambda: len(sink.received) == 1, timeout=10)
    os.kill(process.pid, signal.SIGTERM)
    time.sleep(0.5)
    # uvicorn ends by its signal's default once it has stopped; a worker returns.
    normal = 0 if command == "worker" else -signal.SIGTERM
    assert process.stop(signal.SIGHUP) == normal
    assert "forwarder_stopped" in process.output()
    assert '"delivery_state":"delivered"' in process.output()


def ignores_sighup(pid: int) -> bool:
    """Whether SIGHUP is in the process's ignored signals (/proc's SigIgn mask)."""
    status = Path(f"/proc/{pid}/status").read_text()
    (mask,) = [line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")]
    return bool(int(mask, 16) & 1 << (signal.SIGHUP - 1))


@pytest.mark.any_backend
def test_a_sighup_while_the_worker_starts_does_not_end_it(
    start_server: Callable[..., ReceiverProcess], tmp_path: Path
) -> None:
    """SIGHUP once `worker` has imported its code (its command's first statement ignores
    the signal) and before it has started: the worker starts, and stops normally, where
    SIGHUP's default action ended it. (A signal during the imports still ends it.)"""
    server = start_server()
    log_path = tmp_path / "sighup-at-start.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "receiver", "worker"],
            cwd=tmp_path,
            env={"PATH": os.environ.get("PATH", ""), **server.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        # Looked for without wait_until's pause: it starts about 0.25 s later.
        deadline = time.monotonic() + 20
        while not ignores_sighup(worker.pid):
            assert time.monotonic() < deadline, "SIGHUP never ignored"
            time.sleep(0.001)
        worker.send_signal(signal.SIGHUP)
        assert b"forwarder_started" not in log_path.read_bytes(), "sent too late"
        wait_until(lambda: b"forwarder_started" in log_path.read_bytes(), timeout=20)
        time.sleep(0.5)
        assert worker.poll() is None, log_path.read_text()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


@pytest.mark.any_backend
def test_destinations_reload_leaves_default_to_the_services_environment(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    tmp_path: Path,
) -> None:
    """Run with a RECEIVER_FORWARD_URL other than the service's, the command reports no
    change: `default` is the environment's, read at start, and no reload changes it."""
    serving, elsewhere, extra = own_downstream(), own_downstream(), own_downstream()
    table = {"name": "extra", "url": extra.url, "signing_secrets": new_secrets()}
    file = write_destinations(tmp_path / "destinations.toml", table)
    server = start_server(forward_url=serving.url, destinations_file=file)
    env = server.env | {"RECEIVER_FORWARD_URL": elsewhere.url}
    said = run_cli("destinations", "reload", "--json", env=env, cwd=server.workdir)
    assert said.returncode == 0, said.stderr
    assert orjson.loads(said.stdout) == {"added": [], "removed": [], "changed": {}}
