"""What replays and reprocessing say in words: numbers agree with their nouns, and a dry
run's count past its bound reads "more than"."""

import pytest

from receiver.operators.actions import ReprocessCounts
from receiver.operators.nouns import COUNT_LIMIT
from receiver.operators.replays import Replayed


@pytest.mark.parametrize(
    ("by_destination", "words"),
    [
        ({"analytics": 3, "billing": 1}, "4 deliveries: analytics 3, billing 1"),
        ({"billing": 1}, "1 delivery: billing 1"),
        ({}, "0 deliveries"),
    ],
)
def test_replayed_reads_deliveries_by_destination(
    by_destination: dict[str, int], words: str
) -> None:
    assert str(Replayed(by_destination)) == words
    assert str(Replayed(by_destination, dry_run=True)) == words


def test_a_dry_run_past_its_bound_reads_more_than() -> None:
    """A dry run counts each destination to COUNT_LIMIT + 1: past the bound is "more than"."""
    planned = Replayed({"analytics": COUNT_LIMIT + 1, "billing": 2}, dry_run=True)
    assert str(planned) == "more than 10,002 deliveries: analytics more than 10,000, billing 2"


def test_a_real_replay_reads_its_exact_counts() -> None:
    """A replay's counts are what it queued, exact: never "more than", however many."""
    queued = Replayed({"analytics": 12_345, "billing": 2})
    assert str(queued) == "12,347 deliveries: analytics 12,345, billing 2"


def test_reprocess_counts_read_changed_and_unchanged() -> None:
    counts = ReprocessCounts({"applied": 10, "quarantined": 2}, changed=3)
    assert str(counts) == "reprocessed 12 events: 3 changed outcome, 9 unchanged"
    assert str(ReprocessCounts({"applied": 1}, changed=0)) == (
        "reprocessed 1 event: 0 changed outcome, 1 unchanged"
    )
    assert counts.as_json() == {
        "reprocessed": 12,
        "changed": 3,
        "unchanged": 9,
        "gone": 0,
        "outcomes": {"applied": 10, "quarantined": 2},
    }
