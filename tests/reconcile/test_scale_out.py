"""Reconciliation on PostgreSQL with several processes: passes running at once split the due
records between them, and each task is asked about, and its result stored, once."""

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import sqlalchemy as sa

from tests.conftest import ADMIN_TOKEN, Rivya, Sensitive
from tests.databases import PostgresServer, reading
from tests.fake_rivya import FakeRivya
from tests.helpers import Downstream, ReceiverProcess, make_event, wait_until
from tests.reconcile.conftest import reconciling

TASKS = 40

STALE_AFTER_SECONDS = 5


def test_two_passes_at_once_ask_about_each_task_once_and_store_one_event_each(
    postgres_server: PostgresServer,
    fake_rivya: FakeRivya,
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    tmp_path: Path,
) -> None:
    sink = own_downstream()
    settings = {
        "database_url": postgres_server.new_database(),
        "signing_secrets": secrets_in_use[0],
        "admin_token": ADMIN_TOKEN,
        "forward_url": sink.url,
        "forward_signing_secrets": new_secrets(),
        **reconciling(fake_rivya, reconcile_after_seconds="3600"),
    }
    env = {f"RECEIVER_{name.upper()}": value for name, value in settings.items()}
    server = ReceiverProcess(tmp_path, env).start()
    try:
        rivya = Rivya(server, secrets_in_use[0], sensitive)
        task_ids = []
        for _ in range(TASKS):
            generation = make_event()["data"]
            fake_rivya.generations[generation["id"]] = generation
            task_ids.append(generation["id"])
            assert rivya.admin(
                "/tasks", method="POST", json={"task_id": generation["id"]}
            ).is_success
        # Stale only after this long: a pass that starts later than the other by more than it
        # (a loaded machine starting two interpreters) may take the first pass's claims as
        # due again, which with a second of it a clean-clone run did (50 asks for 40 tasks).
        time.sleep(STALE_AFTER_SECONDS)

        passes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "receiver",
                    "reconcile",
                    "--json",
                    "--stale-after",
                    f"{STALE_AFTER_SECONDS}s",
                ],
                cwd=tmp_path,
                # 10 a second: a pass's first batch takes two seconds, so both are running.
                env={"PATH": os.environ.get("PATH", ""), **env, "RECEIVER_RIVYA_API_RATE": "10"},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        reports = [orjson.loads(p.communicate(timeout=60)[0]) for p in passes]
        assert all(p.returncode == 0 for p in passes)
        assert sum(report["asked"] for report in reports) == TASKS
        assert all(report["asked"] > 0 for report in reports), "both passes took a share"

        asked = Counter(call.path.rsplit("/", 1)[-1] for call in fake_rivya.calls_to("/api/v1/gen"))
        assert asked == dict.fromkeys(task_ids, 1)
        with reading(settings["database_url"]) as connection:
            stored = connection.scalars(sa.text("SELECT id FROM events")).all()
        assert sorted(stored) == sorted(f"reconciled:{t}:succeeded" for t in task_ids)
        wait_until(lambda: len(set(sink.ids())) == TASKS, timeout=30)
        assert len(sink.received) == TASKS
    finally:
        # A failed assertion must not leave the service running into the next test.
        server.stop()
