"""`make bench`: how close ingest comes to a bare Starlette endpoint, and what else it costs.

Runs on loopback, one server at a time, each its own process with one uvicorn worker:
  1. a bare Starlette endpoint that reads the body and answers 204 (the ceiling);
  2. `receiver serve` on a fresh SQLite database, default durability, forwarding off; and
     the same with tracing on (bench/tracing.py: sampler always_on, then
     parentbased_traceidratio at 0.01, each exporting to a local sink), and with
     OTEL_SDK_DISABLED=true beside an endpoint (1 and 2 alternate, twice each, the second
     round in reverse order, and the best of each is kept);
  3. the same with every event sent three times;
  4. `receiver worker` draining a backlog of 20,000 deliveries into a local 200 endpoint,
     then a bare aiohttp client against the same endpoint (the client-side ceiling);
  5. `receiver serve` under 60 s of load, for memory growth;
  6. `receiver serve` on PostgreSQL (a server the bench starts), one replica, then two
     (each replica driven by its own wrk with half the connections);
  7. the console's pages on a SQLite database of a million events (bench/console.py);
  8. `receiver serve` with two destinations under bursts of every size from 1 to 256
     concurrent webhooks, for memory growth (bench/bursts.py).
wrk drives the load (bench/load.py) at 32 connections with pre-signed, unique requests;
bench/servers.py starts the processes, bench/runs.py measures, bench/report.py writes the
table, printed and put into README.md's Performance section.
"""

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.bursts import run_bursts
from bench.console import run_console
from bench.load import Load, write_feed
from bench.report import Results, check, correct, render, write_into_readme
from bench.runs import Ingest, run_bare, run_drain, run_memory, run_postgres, run_receiver
from bench.tracing import TRACINGS, Traced, run_traced
from receiver.signatures import WebhookSecret
from tests.databases import PostgresServer


def main() -> int:
    secret = WebhookSecret.generate()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = (
            "bare",
            "duplicates",
            "drain",
            "memory",
            "postgres",
            "console",
            "bursts",
        )
        dirs = {name: root / name for name in names}
        for path in dirs.values():
            path.mkdir()
        feed = root / "unique.tsv"

        def fresh() -> Path:
            """A directory of its own for a run, so that it starts on an empty database."""
            return Path(tempfile.mkdtemp(dir=root))

        # Alternated, twice each, best of each kept: this machine's speed drifts by a third
        # from one minute to the next, and a ratio of two runs far apart measures the drift.
        # The second round runs in reverse order, so that a steady drift favours none.
        bares: list[tuple[Load, float]] = []
        ingests: list[Ingest] = []
        traced: dict[str, list[Traced]] = {name: [] for name in TRACINGS}

        def run_tracing(name: str) -> Callable[[], None]:
            return lambda: traced[name].append(run_traced(fresh(), secret, feed, name))

        runs: list[tuple[str, Callable[[], None]]] = [
            ("1/9 bare Starlette", lambda: bares.append(run_bare(dirs["bare"], secret, feed))),
            ("2/9 receiver", lambda: ingests.append(run_receiver(fresh(), secret, feed))),
            *(
                (f"2/9 receiver, {setup.label}", run_tracing(name))
                for name, setup in TRACINGS.items()
            ),
        ]
        for round_ in (1, 2):
            # Signed now: a round takes minutes, and the receiver refuses a signature older
            # than its tolerance (300 s).
            print(f"Writing signed requests ({round_} of 2) ...", flush=True)
            write_feed(feed, secret, 200_000)
            for label, run in runs if round_ == 1 else reversed(runs):
                print(f"{label} ({round_} of 2)", flush=True)
                run()
        bare, bare_rss = max(bares, key=lambda run: run[0].rps)
        ingest = max(ingests, key=lambda run: run.load.rps)
        tracing = {
            name: max(runs_, key=lambda run: run.ingest.load.rps) for name, runs_ in traced.items()
        }
        print("3/9 receiver, every event three times", flush=True)
        duplicates = root / "duplicates.tsv"
        write_feed(duplicates, secret, 70_000, copies=3)
        dup = run_receiver(dirs["duplicates"], secret, duplicates)
        print("4/9 forwarder drain, and a bare aiohttp client", flush=True)
        drain = run_drain(dirs["drain"], secret)
        print("5/9 memory over 60 s", flush=True)
        rss_start, rss_end, memory_load = run_memory(dirs["memory"], secret, ingest.load.rps)
        halves = [root / "half-a.tsv", root / "half-b.tsv"]
        # Signed anew, as the first rounds' requests are older than the tolerance by now.
        write_feed(feed, secret, 200_000)
        for half in halves:
            write_feed(half, secret, 100_000)
        postgres = PostgresServer()
        try:
            print("6/9 receiver on PostgreSQL, one replica", flush=True)
            pg_one, pg_one_rows = run_postgres(dirs["postgres"], secret, [feed], postgres)
            print("7/9 receiver on PostgreSQL, two replicas", flush=True)
            pg_two, pg_two_rows = run_postgres(dirs["postgres"], secret, halves, postgres)
        finally:
            postgres.stop()
        print("8/9 console pages on a million events", flush=True)
        console = run_console(dirs["console"], secret)
        print("9/9 bursts of every size from 1 to 256, two destinations", flush=True)
        bursts = run_bursts(dirs["bursts"], secret)

    results = Results(
        bare=bare,
        bare_rss=bare_rss,
        ingest=ingest.load,
        ingest_rss=ingest.rss,
        ingest_rows=ingest.rows,
        duplicates=dup.load,
        duplicates_rss=dup.rss,
        duplicates_rows=dup.rows,
        drain=drain,
        rss_start=rss_start,
        rss_end=rss_end,
        memory_load=memory_load,
        pg_one=pg_one,
        pg_one_rows=pg_one_rows,
        pg_two=pg_two,
        pg_two_rows=pg_two_rows,
        postgres_version=postgres.version,
        console=console,
        bursts=bursts,
        tracing=tracing,
    )
    checks = check(results)
    table = render(results, checks)
    print("\n" + table)
    write_into_readme(table)
    return 0 if correct(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
