"""The figures RELIABILITY.md publishes: each fault and hostile-input test adds what it
tried and what came of it, and the run prints the totals at its end."""

from collections import Counter, defaultdict

import pytest


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
