"""Settings: read once from the environment and `.env`; unusable values name their variable
and never echo a secret."""

import typing
from pathlib import Path

import pytest

from receiver.exceptions import SettingsError
from receiver.settings import Settings, env_variable
from tests.helpers import new_secret, run_cli

SECRET = new_secret()


def test_defaults_need_only_a_signing_secret() -> None:
    secret = new_secret()
    settings = Settings.from_environment({"RECEIVER_SIGNING_SECRETS": secret}, None)
    assert settings.database_url == "sqlite+aiosqlite:///./data/receiver.db"
    assert settings.timestamp_tolerance_seconds == 300
    assert settings.max_body_bytes == 1_048_576
    assert settings.admin_token is None
    # Private metrics and no admin token still start (metrics then answer 401 to all).
    assert (settings.metrics_public, settings.metrics_port) == (False, None)
    assert (settings.log_level, settings.log_format) == ("info", "auto")
    assert [s.reveal() for s in settings.signing_secrets] == [secret]


def test_several_secrets_separated_by_commas_or_spaces() -> None:
    first, second, third = new_secret(), new_secret(), new_secret()
    environ = {"RECEIVER_SIGNING_SECRETS": f" {first},{second}  {third} "}
    settings = Settings.from_environment(environ, None)
    assert [s.reveal() for s in settings.signing_secrets] == [first, second, third]


def test_environment_overrides_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"RECEIVER_SIGNING_SECRETS={new_secret()}\nRECEIVER_LOG_LEVEL=debug\n")
    settings = Settings.from_environment({"RECEIVER_LOG_LEVEL": "WARNING"}, env_file)
    assert settings.log_level == "warning"
    assert len(settings.signing_secrets) == 1


def test_variables_without_our_prefix_are_ignored() -> None:
    environ = {"RECEIVER_SIGNING_SECRETS": new_secret(), "DATABASE_URL": "postgresql://x"}
    assert Settings.from_environment(environ, None).database_url.startswith("sqlite")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RECEIVER_SIGNING_SECRETS": ""}, "RECEIVER_SIGNING_SECRETS: is required"),
        ({"RECEIVER_SIGNING_SECRETS": "change-me"}, "RECEIVER_SIGNING_SECRETS: a signing secret"),
        ({"RECEIVER_SIGNING_SECRETS": "whsec_c2hvcnQ="}, "RECEIVER_SIGNING_SECRETS: a signing key"),
        ({"RECEIVER_TIMESTAMP_TOLERANCE_SECONDS": "-1"}, "RECEIVER_TIMESTAMP_TOLERANCE_SECONDS:"),
        ({"RECEIVER_MAX_BODY_BYTES": "lots"}, "RECEIVER_MAX_BODY_BYTES:"),
        ({"RECEIVER_LOG_FORMAT": "xml"}, "RECEIVER_LOG_FORMAT:"),
        (
            {"RECEIVER_FORWARD_URL": "http://[::1", "RECEIVER_FORWARD_SIGNING_SECRETS": SECRET},
            "RECEIVER_FORWARD_URL: use an absolute http:// or https:// URL",
        ),
        (
            {"RECEIVER_FORWARD_URL": "ftp://x/", "RECEIVER_FORWARD_SIGNING_SECRETS": SECRET},
            "RECEIVER_FORWARD_URL: use an absolute http:// or https:// URL",
        ),
        ({"RECEIVER_ADMIN_TOKEN": "short"}, "RECEIVER_ADMIN_TOKEN: use at least 16 characters"),
        ({"RECEIVER_SIGNING_SECRET": "typo"}, "RECEIVER_SIGNING_SECRET: is not recognised"),
        (
            {"RECEIVER_RIVYA_API_KEY": "sk_live_not_rivyas"},
            "RECEIVER_RIVYA_API_KEY: expected a Rivya secret key (rvya_sk_...)",
        ),
        ({"RECEIVER_RIVYA_API_KEY": "rvya_sk_"}, "RECEIVER_RIVYA_API_KEY: expected a Rivya"),
        ({"RECEIVER_RIVYA_API_URL": "rivya.ai/api"}, "RECEIVER_RIVYA_API_URL: use an absolute"),
        ({"RECEIVER_RIVYA_API_RATE": "0"}, "RECEIVER_RIVYA_API_RATE:"),
        ({"RECEIVER_RECONCILE_AFTER_SECONDS": "-5"}, "RECEIVER_RECONCILE_AFTER_SECONDS:"),
        ({"RECEIVER_LOW_CREDITS_THRESHOLD": "some"}, "RECEIVER_LOW_CREDITS_THRESHOLD:"),
        ({"RECEIVER_SUPPORT_TOKEN": "short"}, "RECEIVER_SUPPORT_TOKEN: use at least 16"),
        (
            {
                "RECEIVER_ADMIN_TOKEN": "same-token-0123456789",
                "RECEIVER_SUPPORT_TOKEN": "same-token-0123456789",
            },
            "RECEIVER_SUPPORT_TOKEN: must differ from RECEIVER_ADMIN_TOKEN",
        ),
        ({"RECEIVER_CONSOLE_SESSION_HOURS": "0"}, "RECEIVER_CONSOLE_SESSION_HOURS:"),
        ({"RECEIVER_METRICS_PORT": "65536"}, "RECEIVER_METRICS_PORT:"),
        ({"RECEIVER_METRICS_REFRESH_SECONDS": "0"}, "RECEIVER_METRICS_REFRESH_SECONDS:"),
    ],
)
def test_unusable_value_names_its_variable(environ: dict[str, str], message: str) -> None:
    environ = {"RECEIVER_SIGNING_SECRETS": new_secret(), **environ}
    with pytest.raises(SettingsError) as raised:
        Settings.from_environment(environ, None)
    assert message in str(raised.value)


def test_errors_and_repr_never_show_secret_values() -> None:
    secret, token = new_secret(), "a-real-admin-token-value"
    settings = Settings.from_environment(
        {"RECEIVER_SIGNING_SECRETS": secret, "RECEIVER_ADMIN_TOKEN": token}, None
    )
    for text in (repr(settings), str(settings)):
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text
        assert token not in text
    with pytest.raises(SettingsError) as raised:
        Settings.from_environment(
            {
                "RECEIVER_SIGNING_SECRETS": f"{secret},whsec_c2hvcnQ=",
                "RECEIVER_ADMIN_TOKEN": "tiny",
            },
            None,
        )
    assert secret not in str(raised.value)
    assert "tiny" not in str(raised.value)


def test_the_rivya_api_key_is_never_shown() -> None:
    key = "rvya_sk_" + "k3y" * 10
    settings = Settings.from_environment(
        {"RECEIVER_SIGNING_SECRETS": new_secret(), "RECEIVER_RIVYA_API_KEY": key}, None
    )
    assert key not in repr(settings)
    assert settings.rivya_api_url == "https://rivya.ai/api/v1"
    assert settings.reconcile_after.total_seconds() == 900
    with pytest.raises(SettingsError) as raised:
        Settings.from_environment(
            {"RECEIVER_SIGNING_SECRETS": new_secret(), "RECEIVER_RIVYA_API_KEY": "x" + key}, None
        )
    assert key not in str(raised.value)


PASSWORD = "pa55-w0rd-never-shown"  # noqa: S105 - a test's stand-in for a database password


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"postgresql+asyncpg://u:{PASSWORD}@db:5432x/receiver", "not a database URL"),
        (f"postgresql+asyncpg://u:{PASSWORD}@db:70000/receiver", "the port must be from 1"),
        (f"postgresql+asyncpg://u:{PASSWORD}@db:0/receiver", "the port must be from 1"),
        (f"postgresql://u:{PASSWORD}@db/receiver", "starts sqlite+aiosqlite:// or postgresql"),
        (f"mysql+aiomysql://u:{PASSWORD}@db/receiver", "starts sqlite+aiosqlite://"),
        ("sqlite:///./data/receiver.db", "starts sqlite+aiosqlite://"),
        ("sqlite+aiosqlite:///:memory:", "SQLite needs a file"),
        (PASSWORD, "not a database URL"),
        (f"postgresql+asyncpg://u:{PASSWORD}@[::1/receiver", "not a database URL"),
    ],
)
def test_an_unusable_database_url_is_one_line_naming_it_never_its_password(
    url: str, message: str
) -> None:
    environ = {"RECEIVER_SIGNING_SECRETS": new_secret(), "RECEIVER_DATABASE_URL": url}
    with pytest.raises(SettingsError) as raised:
        Settings.from_environment(environ, None)
    text = str(raised.value)
    assert text.startswith("RECEIVER_DATABASE_URL: ")
    assert message in text
    assert "\n" not in text
    assert PASSWORD not in text


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:///./data/receiver.db",
        f"postgresql+asyncpg://u:{PASSWORD}@db:5432/receiver",
        "postgresql+asyncpg://u@/receiver?host=/run/postgresql",
        "sqlite+aiosqlite:///relative/receiver.db",
        "sqlite+aiosqlite:////var/lib/receiver/receiver.db",
        f"postgresql+asyncpg://u:{PASSWORD}@db/receiver?ssl=require",
        "postgresql+asyncpg://u:p%40ss%2Fw%3Ard%23%3F@[::1]:5432/receiver",
        "postgresql+asyncpg://u:pw@/receiver?host=db1:5432&host=db2:5432",
    ],
)
def test_database_urls_of_both_backends_are_taken(url: str) -> None:
    environ = {"RECEIVER_SIGNING_SECRETS": new_secret(), "RECEIVER_DATABASE_URL": url}
    assert Settings.from_environment(environ, None).database_url == url


def _holds_float(annotation: object) -> bool:
    return annotation is float or float in typing.get_args(annotation)


FLOAT_FIELDS = [name for name, f in Settings.model_fields.items() if _holds_float(f.annotation)]


def test_the_float_fields_are_those_the_walk_below_tries() -> None:
    """The walk finds the settings with deadlines, leases and pauses (and sees new ones)."""
    assert {
        "request_timeout_seconds",
        "database_busy_timeout_seconds",
        "forward_timeout_seconds",
        "forward_lease_seconds",
        "forward_poll_seconds",
        "forward_retry_schedule",
        "rivya_api_timeout_seconds",
        "reconcile_interval_seconds",
        "retention_interval_seconds",
        "metrics_refresh_seconds",
    } <= set(FLOAT_FIELDS)


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity", "1e999"])
def test_no_float_setting_takes_an_infinity_or_nan(field: str, value: str) -> None:
    """`inf` seconds turned a deadline off (RECEIVER_REQUEST_TIMEOUT_SECONDS=inf was taken):
    every float setting refuses a value that is not finite, naming its variable."""
    environ = {"RECEIVER_SIGNING_SECRETS": new_secret(), env_variable(field): value}
    with pytest.raises(SettingsError) as raised:
        Settings.from_environment(environ, None)
    assert str(raised.value).startswith(f"{env_variable(field)}: ")


@pytest.mark.parametrize(
    "url",
    [
        f"https://admin:{PASSWORD}@console.example.com/",
        f"https://{PASSWORD}@console.example.com",
        f"https://console.example.com/?token={PASSWORD}",
        f"https://console.example.com/#{PASSWORD}",
        "https://console.example.com/?",
        f"https://console.example.com/\n{PASSWORD}",
        f"https://console.example.com/ {PASSWORD}",
    ],
)
def test_a_public_url_with_a_password_query_or_fragment_is_one_line_never_its_value(
    url: str,
) -> None:
    """RECEIVER_PUBLIC_URL is the base of the links messages carry to people: a user and
    password there were sent to every chat channel, so it takes none, nor a query or a
    fragment (or a line break), and the refusal never shows the value."""
    environ = {"RECEIVER_SIGNING_SECRETS": new_secret(), "RECEIVER_PUBLIC_URL": url}
    with pytest.raises(SettingsError) as raised:
        Settings.from_environment(environ, None)
    text = str(raised.value)
    assert text.startswith("RECEIVER_PUBLIC_URL: use a base URL")
    assert "\n" not in text
    assert PASSWORD not in text


def test_a_public_url_keeps_its_path_without_the_trailing_slash() -> None:
    environ = {
        "RECEIVER_SIGNING_SECRETS": new_secret(),
        "RECEIVER_PUBLIC_URL": "https://console.example.com:8443/receiver/",
    }
    settings = Settings.from_environment(environ, None)
    assert settings.public_url == "https://console.example.com:8443/receiver"


def test_a_command_refuses_a_public_url_with_a_password_in_one_line_without_it(
    tmp_path: Path,
) -> None:
    """What an operator sees on stderr, as `serve` and `worker` print it too."""
    env = {
        "RECEIVER_SIGNING_SECRETS": new_secret(),
        "RECEIVER_PUBLIC_URL": f"https://admin:{PASSWORD}@console.example.com/",
    }
    result = run_cli("notify", "test", env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert "RECEIVER_PUBLIC_URL: use a base URL" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def _forwarding_at(rate: str) -> dict[str, str]:
    return {
        "RECEIVER_SIGNING_SECRETS": new_secret(),
        "RECEIVER_FORWARD_URL": "http://product:9000/hooks",
        "RECEIVER_FORWARD_SIGNING_SECRETS": SECRET,
        "RECEIVER_FORWARD_MAX_PER_SECOND": rate,
    }


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "fast", "1e9"])
def test_forward_max_per_second_out_of_range_names_its_variable(value: str) -> None:
    """`default`'s rate is a positive number up to MAX_PER_SECOND, or start-up stops."""
    with pytest.raises(SettingsError) as raised:
        Settings.from_environment(_forwarding_at(value), None)
    text = str(raised.value)
    assert text.startswith("RECEIVER_FORWARD_MAX_PER_SECOND: ")
    assert "\n" not in text


@pytest.mark.parametrize(("value", "rate"), [("0.5", 0.5), ("20", 20.0)])
def test_forward_max_per_second_is_default_s_rate(value: str, rate: float) -> None:
    (default,) = Settings.from_environment(_forwarding_at(value), None).forwarding
    assert default.max_per_second == rate
