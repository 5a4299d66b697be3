"""The one rule for what a record's credits say: reserved, final, and what came back."""

import pytest

from receiver.credits import NOT_REPORTED_YET, explain_credits


@pytest.mark.parametrize(
    ("reserved", "final", "returned", "summary"),
    [
        (120, 80, "40 returned", "reserved 120, final 80, 40 returned"),
        (120, 0, "120 returned", "reserved 120, final 0, 120 returned"),
        (120, 120, "0 returned", "reserved 120, final 120, 0 returned"),
        (0, 0, "0 returned", "reserved 0, final 0, 0 returned"),
        (120, None, NOT_REPORTED_YET, "reserved 120, final not reported yet"),
        (None, None, NOT_REPORTED_YET, "reserved not reported yet, final not reported yet"),
        (
            None,
            80,
            "returned unknown (reserve not reported)",
            "reserved not reported yet, final 80, returned unknown (reserve not reported)",
        ),
        (
            80,
            120,
            "none returned (final above reserve)",
            "reserved 80, final 120, none returned (final above reserve)",
        ),
    ],
)
def test_returned_is_reserved_minus_final_once_both_are_reported(
    reserved: int | None, final: int | None, returned: str, summary: str
) -> None:
    explained = explain_credits(reserved, final)
    assert explained.returned == returned
    assert str(explained) == summary


def test_no_case_shows_a_dash_or_a_negative_amount() -> None:
    """Every pairing of unknown, zero, small and large: never `-`, never a minus sign."""
    amounts = (None, 0, 1, 80, 120, 2**53 - 1)
    for reserved in amounts:
        for final in amounts:
            explained = explain_credits(reserved, final)
            for text in (explained.reserved, explained.final, explained.returned):
                assert text != "-"
                assert "-" not in text, (reserved, final)
