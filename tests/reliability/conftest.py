"""The figures RELIABILITY.md publishes: each fault and hostile-input test adds what it
tried and what came of it; the run prints the totals at its end and writes them to
`RESULTS` (ignored by git), from which `python -m tests.reliability.report` writes the
document's table."""

import json
import os
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

# Outside version control: a run on a clean clone leaves the checkout as it found it.
RESULTS = Path(__file__).parent / "results" / "figures.json"


class Figures:
    def __init__(self) -> None:
        self.counts: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def add(self, topic: str, **counts: int) -> None:
        self.counts[topic].update(counts)


FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES.counts:
        terminalreporter.section("reliability figures")
        for topic, counts in FIGURES.counts.items():
            terminalreporter.write_line(
                f"{topic}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
            )


# Tests of this run that failed, other than the table's own check: a run whose only failure
# is a table out of date must still publish the figures that bring it up to date.
FAILED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and not report.nodeid.startswith("tests/reliability/test_report.py"):
        FAILED.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Only a run that completed without a failure, in one process, publishes (an xdist
    worker holds a share of the figures, and a failed run's are not the document's). A run
    of some of the tests replaces their topics and keeps the others' from the run before."""
    completed = exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    if FIGURES.counts and completed and not FAILED and not hasattr(session.config, "workerinput"):
        RESULTS.parent.mkdir(exist_ok=True)
        earlier = json.loads(RESULTS.read_text())["figures"] if RESULTS.exists() else {}
        published = {
            "run": datetime.now(UTC).date().isoformat(),
            "cores": os.cpu_count(),
            "figures": earlier | {topic: dict(counts) for topic, counts in FIGURES.counts.items()},
        }
        RESULTS.write_text(json.dumps(published, indent=1, sort_keys=True) + "\n")
