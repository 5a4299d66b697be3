"""What replays and reprocessing say in words: numbers agree with their nouns, and a dry
run's count past its bound reads "more than"."""

import pytest

from receiver.operators.actions import REPLAY_COUNT_LIMIT, Replayed, ReprocessCounts


@pytest.mark.parametrize(
    ("by_destination", "words"),
    [
        ({"analytics": 3, "billing": 1}, "4 deliveries: analytics 3, billing 1"),
        ({"billing": 1}, "1 delivery: billing 1"),
        ({}, "0 deliveries"),
        (
            {"analytics": REPLAY_COUNT_LIMIT + 1, "billing": 2},
            "more than 10,002 deliveries: analytics more than 10,000, billing 2",
        ),
    ],
)
def test_replayed_reads_deliveries_by_destination(
    by_destination: dict[str, int], words: str
) -> None:
    assert str(Replayed(by_destination)) == words


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
        "outcomes": {"applied": 10, "quarantined": 2},
    }
