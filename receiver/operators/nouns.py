"""Numbers with their nouns, as operators read them: "1 event", "2 events", "1 delivery",
and counts that stop at a bound: "more than 10,000 events"."""

# A count shown before an action (a dry run's deliveries, the quarantined events a reprocess
# would take, a destination's tabs) stops here and says "more than": each match costs an
# index lookup or two, and past ten thousand the exact number changes nothing an operator
# decides. Counting to COUNT_LIMIT + 1 is enough to tell.
COUNT_LIMIT = 10_000


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and `noun`, made plural (`plural`, or `noun` + "s") unless `n` is 1."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {plural or noun + 's'}"


def capped(n: int) -> str:
    """`n`, or past COUNT_LIMIT, "more than 10,000"."""
    return f"more than {COUNT_LIMIT:,}" if n > COUNT_LIMIT else f"{n:,}"


def counted_capped(n: int, noun: str, plural: str | None = None) -> str:
    """`counted`, or past COUNT_LIMIT, "more than 10,000 events"."""
    if n > COUNT_LIMIT:
        return f"more than {counted(COUNT_LIMIT, noun, plural)}"
    return counted(n, noun, plural)
