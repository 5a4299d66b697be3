"""A reason given for disabling a destination is shown as written, on one line, in every
listing, the console and the messages to people: what cannot be shown as itself is refused."""

import unicodedata
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.exceptions import InvalidRequestError
from receiver.operators.destination_states import UNSHOWN, checked_reason

# A text made of what is shown as itself, and one character that is not, somewhere in it.
# Hypothesis types categories as literals; the product's set is plain strings.
CATEGORIES: Any = sorted(UNSHOWN)
SHOWN = st.characters(exclude_categories=CATEGORIES)
UNSHOWN_CHARACTERS = st.characters(categories=CATEGORIES)


@given(
    before=st.text(SHOWN, max_size=20),
    unshown=UNSHOWN_CHARACTERS,
    after=st.text(SHOWN, max_size=20),
)
def test_a_reason_with_any_character_not_shown_as_itself_is_refused(
    before: str, unshown: str, after: str
) -> None:
    with pytest.raises(InvalidRequestError, match=r"^reason: no control, format or separator"):
        checked_reason(f"x{before}{unshown}{after}x")


@pytest.mark.parametrize(
    "unshown",
    ["\u202e", "\u2028", "\u2029", "\u200b", "\ufeff", "\x1b", "\x00", "\ue000", "\U000e0001"],
)
def test_direction_overrides_separators_and_invisible_characters_are_refused(
    unshown: str,
) -> None:
    assert unicodedata.category(unshown) in UNSHOWN
    with pytest.raises(InvalidRequestError):
        checked_reason(f"moving {unshown}away")


@given(st.text(SHOWN, min_size=1, max_size=50).filter(str.strip))
def test_a_reason_of_shown_characters_is_kept_stripped(reason: str) -> None:
    assert checked_reason(reason) == reason.strip()
