"""`make bench`: how close ingest comes to a bare Starlette endpoint, and what else it costs.

Runs on loopback, one server at a time, each its own process with one uvicorn worker:
  1. a bare Starlette endpoint that reads the body and answers 204 (the ceiling);
  2. `receiver serve` on a fresh SQLite database, default durability, forwarding off
     (1 and 2 alternate, twice each, and the best of each is kept);
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
from pathlib import Path

from bench.bursts import run_bursts
from bench.console import run_console
from bench.load import write_feed
from bench.report import Results, check, correct, render, write_into_readme
from bench.runs import run_bare, run_drain, run_memory, run_postgres, run_receiver
from receiver.signatures import WebhookSecret
from tests.databases import PostgresServer


def main() -> int:
    secret = WebhookSecret.generate()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = (
            "bare",
            "ingest1",
            "ingest2",
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
        print("Writing signed requests ...", flush=True)
        feed = root / "unique.tsv"
        write_feed(feed, secret, 200_000)
        duplicates = root / "duplicates.tsv"
        write_feed(duplicates, secret, 70_000, copies=3)

        # Alternated, twice each, best of each kept: this machine's speed drifts by a third
        # from one minute to the next, and a ratio of two runs far apart measures the drift.
        bares, ingests = [], []
        for round_ in (1, 2):
            print(f"1/9 bare Starlette ({round_} of 2)", flush=True)
            bares.append(run_bare(dirs["bare"], secret, feed))
            print(f"2/9 receiver ({round_} of 2)", flush=True)
            ingests.append(run_receiver(dirs[f"ingest{round_}"], secret, feed))
        bare, bare_rss = max(bares, key=lambda run: run[0].rps)
        ingest, ingest_rss, ingest_rows = max(ingests, key=lambda run: run[0].rps)
        print("3/9 receiver, every event three times", flush=True)
        dup, dup_rss, dup_rows = run_receiver(dirs["duplicates"], secret, duplicates)
        print("4/9 forwarder drain, and a bare aiohttp client", flush=True)
        drain = run_drain(dirs["drain"], secret)
        print("5/9 memory over 60 s", flush=True)
        rss_start, rss_end, memory_load = run_memory(dirs["memory"], secret, ingest.rps)
        halves = [root / "half-a.tsv", root / "half-b.tsv"]
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
        ingest=ingest,
        ingest_rss=ingest_rss,
        ingest_rows=ingest_rows,
        duplicates=dup,
        duplicates_rss=dup_rss,
        duplicates_rows=dup_rows,
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
    )
    checks = check(results)
    table = render(results, checks)
    print("\n" + table)
    write_into_readme(table)
    return 0 if correct(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
