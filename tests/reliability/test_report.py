"""RELIABILITY.md's table of this run is what the tests' constants and its run's figures
give (`python -m tests.reliability.report`), and the check can fail."""

import json

import pytest

from tests.reliability import report, test_crashes, test_fuzz


@pytest.fixture(scope="module")
def document() -> str:
    return report.DOCUMENT.read_text()


def test_reliability_md_table_is_generated_from_the_tests_constants(document: str) -> None:
    assert report.check(document) is None, report.check(document)


def test_the_check_fails_when_a_constant_changes_since_the_table_was_generated(
    document: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(test_crashes, "KILL_ROUNDS", test_crashes.KILL_ROUNDS + 1)
    assert "kill -9 under load: rounds" in str(report.check(document))
    monkeypatch.undo()
    monkeypatch.setitem(test_fuzz.MIN_FUZZ_RUNS, "verifier", 1)
    assert report.check(document) == (
        "the table differs from what its figures and the tests' constants give"
    )


def test_the_check_fails_when_the_table_is_edited_by_hand(document: str) -> None:
    block = report.generated_block(document)
    embedded = report.EMBEDDED.search(block)
    assert embedded is not None
    published = json.loads(embedded[1])
    lost = published["figures"]["kill -9 under load"]["lost"]
    edited = block.replace(f"| **{lost}** |", "| **-1** |", 1)
    assert edited != block
    assert report.check(document.replace(block, edited)) is not None
    assert report.check(document.replace(block, "")) is not None
