"""What a record's credits say, in the words the console and the CLI both show.

Rivya reserves credits when a task starts and charges `final_credits` when it ends; the
rest of the reserve goes back to the wallet (a failure usually charges 0, so all of it
comes back). What was returned is therefore known only once both numbers are: until Rivya
reports the final charge it is "not reported yet", never a dash or a guess. A final charge
above the reserve should not happen; the numbers are shown as they are, without a negative
amount returned.
"""

from dataclasses import dataclass

NOT_REPORTED_YET = "not reported yet"


@dataclass(frozen=True, slots=True)
class CreditsExplained:
    reserved: str
    final: str
    returned: str

    def __str__(self) -> str:
        # An unreported final charge already says that what was returned is not known.
        known = self.final != NOT_REPORTED_YET
        return f"reserved {self.reserved}, final {self.final}" + (
            f", {self.returned}" if known else ""
        )


def explain_credits(reserved: int | None, final: int | None) -> CreditsExplained:
    """Reserved, final and returned (reserved minus final) as text, each amount or why not."""
    reserved_text = NOT_REPORTED_YET if reserved is None else str(reserved)
    final_text = NOT_REPORTED_YET if final is None else str(final)
    if final is None:
        returned = NOT_REPORTED_YET
    elif reserved is None:
        returned = "returned unknown (reserve not reported)"
    elif final > reserved:
        returned = "none returned (final above reserve)"
    else:
        returned = f"{reserved - final} returned"
    return CreditsExplained(reserved_text, final_text, returned)
