"""The operator console's parsing of times and spans, and its progress bar."""

from datetime import UTC, datetime, timedelta

import click
import pytest

from receiver.operators.terminal import PROGRESS_FROM, parse_duration, parse_moment, progress


@pytest.mark.parametrize(
    ("text", "span"),
    [("90s", 90), ("90m", 5400), ("24h", 86400), ("30d", 2_592_000), ("2w", 1_209_600)],
)
def test_spans(text: str, span: int) -> None:
    assert parse_duration(text, "--x") == timedelta(seconds=span)
    moment = parse_moment(text, "--x")
    assert moment is not None
    assert abs((datetime.now(UTC) - moment).total_seconds() - span) < 5


def test_iso_times_default_to_utc() -> None:
    assert parse_moment("2026-05-10T02:00:00", "--x") == datetime(2026, 5, 10, 2, tzinfo=UTC)
    assert parse_moment("2026-05-10T02:00:00+02:00", "--x") == datetime(2026, 5, 10, tzinfo=UTC)


@pytest.mark.parametrize("text", ["0d", "-1d", "1y", "soon", "1.5h", ""])
def test_bad_spans_and_times_name_the_option(text: str) -> None:
    with pytest.raises(click.ClickException, match="--older-than"):
        parse_duration(text, "--older-than")
    with pytest.raises(click.ClickException, match="--since"):
        parse_moment(text or "x", "--since")


def test_progress_is_shown_for_large_sets_only(capsys: pytest.CaptureFixture[str]) -> None:
    with progress(10, "Small", quiet=False) as advance:
        advance(10)
    assert "Small" not in capsys.readouterr().err
    with progress(PROGRESS_FROM, "Large", quiet=False) as advance:
        advance(PROGRESS_FROM)
    assert "Large" in capsys.readouterr().err
    with progress(PROGRESS_FROM, "Quiet", quiet=True) as advance:
        advance(PROGRESS_FROM)
    assert "Quiet" not in capsys.readouterr().err
