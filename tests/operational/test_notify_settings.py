"""RECEIVER_NOTIFY_URLS: Apprise URLs split on whitespace, or on a comma before the next
scheme (never inside one's query); a URL Apprise cannot send to stops start-up with one
line naming its position, and neither that line nor Apprise's own logging shows its text."""

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.exceptions import SettingsError
from receiver.operational.apprise_urls import MAX_NOTIFY_URLS
from receiver.settings import Settings
from tests.helpers import new_secret

TOKEN = "tokSECRET0123456789abcdef"  # noqa: S105 - a test fixture's token


def settings_with(urls: str) -> Settings:
    return Settings.from_environment(
        {"RECEIVER_SIGNING_SECRETS": new_secret(), "RECEIVER_NOTIFY_URLS": urls}, None
    )


def test_urls_split_on_whitespace_and_on_commas_before_a_scheme_only() -> None:
    mail = "mailto://user:pw@example.com?to=a@example.com,b@example.com"
    text = f" json://127.0.0.1:9/a,{mail}\n  slack://T000/B000/XXXX , discord://1234/abcd,"
    settings = settings_with(text)
    assert [url.get_secret_value() for url in settings.notify_urls] == [
        "json://127.0.0.1:9/a",
        mail,
        "slack://T000/B000/XXXX",
        "discord://1234/abcd",
    ]
    assert TOKEN not in repr(settings)


@pytest.mark.parametrize(
    "bad",
    [
        f"nosuchservice://{TOKEN}@example.com",
        f"https://example.com/{TOKEN}",
        f"json://{TOKEN}\x00",
        f"slack://{TOKEN}",  # a known scheme, but not a whole Slack URL
    ],
)
def test_a_url_apprise_cannot_send_to_is_one_line_with_its_position(
    bad: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SettingsError) as raised:
        settings_with(f"json://127.0.0.1:9/hook {bad}")
    assert str(raised.value) == "RECEIVER_NOTIFY_URLS: URL 2 is not a URL Apprise can send to"
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err + caplog.text
    assert TOKEN not in repr(raised.value.__context__) + repr(raised.value.__cause__)


def test_more_urls_than_the_bound_are_refused() -> None:
    with pytest.raises(SettingsError, match=f"give at most {MAX_NOTIFY_URLS} URLs"):
        settings_with(" ".join(["json://127.0.0.1:9/hook"] * (MAX_NOTIFY_URLS + 1)))


def test_no_urls_means_notifications_off() -> None:
    assert settings_with(" , ").notify_urls == ()


@pytest.mark.timeout(30)
def test_a_long_run_of_spaces_after_a_comma_is_read_in_one_pass() -> None:
    """One pattern for both separators backtracked: 40,000 spaces took 5.7 s, quadratic."""
    with pytest.raises(SettingsError, match="URL 1 is not a URL Apprise can send to"):
        settings_with("," + " " * 500_000 + "x")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.text(max_size=40),
            st.sampled_from(
                ["json://", "slack://", "mailto://", ",", " ", "://", "?", "%", "\x00"]
            ),
        ),
        max_size=12,
    ).map("".join)
)
def test_any_value_is_taken_or_refused_in_one_line_never_a_stray_exception(text: str) -> None:
    refusal = ""
    try:
        taken = settings_with(text)
    except SettingsError as exc:
        refusal = str(exc)
    else:
        assert len(taken.notify_urls) <= MAX_NOTIFY_URLS
    assert "\n" not in refusal
    assert refusal == "" or refusal.startswith("RECEIVER_NOTIFY_URLS: ")
