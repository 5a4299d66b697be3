"""Numbers with their nouns, as operators read them: "1 event", "2 events", "1 delivery"."""


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and `noun`, made plural (`plural`, or `noun` + "s") unless `n` is 1."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {plural or noun + 's'}"
