"""The destinations file: what it may say, and the one line that stops start-up when it is
wrong (naming the file, the destination and the key, never a secret)."""

from pathlib import Path
from typing import Any

import pytest

from receiver.exceptions import SettingsError
from receiver.operational.events import OperationalType
from receiver.settings import Settings
from tests.helpers import new_secret, run_cli, write_destinations

SECRET = new_secret()
URL = "https://billing.internal/hooks/rivya"


def settings_with(path: Path, **environ: str) -> Settings:
    return Settings.from_environment(
        {
            "RECEIVER_SIGNING_SECRETS": new_secret(),
            "RECEIVER_DESTINATIONS_FILE": str(path),
            **environ,
        },
        None,
    )


def test_the_issue_example_and_the_default_destination_together(tmp_path: Path) -> None:
    file = write_destinations(
        tmp_path / "d.toml",
        {
            "name": "billing",
            "url": URL,
            "signing_secrets_env": "BILLING_SIGNING_SECRETS",
            "event_types": ["generation.failed"],
            "outcomes": ["applied"],
            "max_in_flight": 16,
        },
        {"name": "analytics", "url": "http://analytics:8080/in", "signing_secrets": SECRET},
        mode=0o644,  # readable by others, with an inline secret in the second table
    )
    with pytest.raises(SettingsError, match="group or others may read it"):
        settings_with(Path(file), BILLING_SIGNING_SECRETS=SECRET)
    Path(file).chmod(0o600)
    settings = settings_with(
        Path(file),
        BILLING_SIGNING_SECRETS=f"{SECRET} {new_secret()}",
        RECEIVER_FORWARD_URL="http://product:9000/hooks",
        RECEIVER_FORWARD_SIGNING_SECRETS=new_secret(),
        RECEIVER_FORWARD_CONCURRENCY="8",
    )
    default, billing, analytics = settings.forwarding
    assert (default.name, default.event_types, default.outcomes) == ("default", None, None)
    assert default.max_in_flight == 8
    assert (billing.name, billing.url, billing.max_in_flight) == ("billing", URL, 16)
    assert len(billing.signing_secrets) == 2
    assert billing.wants("generation.failed", "applied")
    assert not billing.wants("generation.failed", "stale")
    assert not billing.wants("generation.succeeded", "applied")
    assert analytics.wants(None, "quarantined")
    assert not analytics.wants("generation.succeeded", "stale"), "stale only when named"
    assert not default.wants("generation.succeeded", "stale")
    assert analytics.max_in_flight == 32
    assert SECRET not in repr(settings)


def test_a_file_without_inline_secrets_may_be_readable(tmp_path: Path) -> None:
    table = {"name": "b", "url": URL, "signing_secrets_env": "B_SECRETS"}
    file = write_destinations(tmp_path / "d.toml", table, mode=0o644)
    assert settings_with(Path(file), B_SECRETS=SECRET).forwarding[0].name == "b"


GOOD: dict[str, Any] = {"name": "billing", "url": URL, "signing_secrets": SECRET}


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ([GOOD | {"colour": "red"}], "destination 'billing': colour: is not recognised"),
        ([GOOD, GOOD], "destination 'billing': name: used by an earlier destination"),
        ([GOOD | {"name": "Billing!"}], "destination 'Billing!': name: use 1 to 64 of a-z"),
        ([GOOD | {"name": "b" * 65}], "name: use 1 to 64 of a-z, 0-9 and -"),
        ([GOOD | {"url": "ftp://x/y"}], "destination 'billing': url: use an absolute http"),
        ([{"name": "billing", "url": URL}], "signing_secrets_env: give it or signing_secrets"),
        ([GOOD | {"signing_secrets": "whsec_not base64!"}], "signing_secrets: a signing secret"),
        ([GOOD | {"signing_secrets": "nope"}], "signing_secrets: a signing secret starts with"),
        (
            [{"name": "billing", "url": URL, "signing_secrets_env": "UNSET_VARIABLE"}],
            "signing_secrets_env: UNSET_VARIABLE is not set",
        ),
        ([GOOD | {"outcomes": ["applied", "late"]}], "destination 'billing': outcomes: use some"),
        ([GOOD | {"event_types": []}], "destination 'billing': event_types:"),
        (
            [GOOD | {"event_types": ["generation.failed", "receiver.nonsense"]}],
            "destination 'billing': event_types: 'receiver.nonsense' is none of the service's",
        ),
        ([GOOD | {"max_in_flight": 0}], "destination 'billing': max_in_flight:"),
        ([GOOD | {"max_in_flight": "16"}], "destination 'billing': max_in_flight:"),
        ([{"url": URL, "signing_secrets": SECRET}], "table 1: name: is required"),
    ],
)
def test_each_mistake_is_one_line_naming_file_destination_and_key(
    tmp_path: Path, tables: list[dict[str, Any]], message: str
) -> None:
    file = write_destinations(tmp_path / "d.toml", *tables)
    with pytest.raises(SettingsError) as raised:
        settings_with(Path(file))
    text = str(raised.value)
    assert text.startswith(f"RECEIVER_DESTINATIONS_FILE {file}: ")
    assert message in text
    assert "\n" not in text
    assert SECRET not in text
    assert SECRET.removeprefix("whsec_") not in text


def test_a_file_that_is_missing_or_not_toml_or_of_the_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot be read"):
        settings_with(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[[destinations]\nname = ")
    with pytest.raises(SettingsError, match="not valid TOML"):
        settings_with(tmp_path / "bad.toml")
    (tmp_path / "shape.toml").write_text('destinations = "billing"\n')
    with pytest.raises(SettingsError, match=r"destinations: give one or more \[\[destinations"):
        settings_with(tmp_path / "shape.toml")
    (tmp_path / "extra.toml").write_text("retries = 3\n")
    with pytest.raises(SettingsError, match="retries: is not recognised"):
        settings_with(tmp_path / "extra.toml")


def test_default_in_the_file_clashes_with_the_forward_url(tmp_path: Path) -> None:
    file = write_destinations(tmp_path / "d.toml", GOOD | {"name": "default"})
    assert settings_with(Path(file)).forwarding[0].name == "default"  # alone, it is a name
    with pytest.raises(SettingsError, match="destination 'default': name: taken by"):
        settings_with(
            Path(file),
            RECEIVER_FORWARD_URL="http://product:9000/hooks",
            RECEIVER_FORWARD_SIGNING_SECRETS=new_secret(),
        )


def test_serve_refuses_a_bad_file_and_a_world_readable_secret_with_one_line(
    tmp_path: Path,
) -> None:
    env = {"RECEIVER_SIGNING_SECRETS": new_secret()}
    bad = write_destinations(tmp_path / "bad.toml", GOOD | {"url": "not a url"})
    result = run_cli("serve", env=env | {"RECEIVER_DESTINATIONS_FILE": bad}, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: RECEIVER_DESTINATIONS_FILE {bad}: destination 'billing': url: use an"
        " absolute http:// or https:// URL"
    ]
    shared = write_destinations(tmp_path / "shared.toml", GOOD, mode=0o644)
    result = run_cli("worker", env=env | {"RECEIVER_DESTINATIONS_FILE": shared}, cwd=tmp_path)
    assert result.returncode == 1
    assert "group or others may read it" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert SECRET not in result.stderr


def test_serve_refuses_an_unknown_operational_type_with_one_line(tmp_path: Path) -> None:
    """A misspelt `receiver.` type would match nothing, silently: start-up stops instead."""
    env = {"RECEIVER_SIGNING_SECRETS": new_secret()}
    bad = write_destinations(tmp_path / "bad.toml", GOOD | {"event_types": ["receiver.nonsense"]})
    result = run_cli("serve", env=env | {"RECEIVER_DESTINATIONS_FILE": bad}, cwd=tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        f"Error: RECEIVER_DESTINATIONS_FILE {bad}: destination 'billing': event_types:"
        " 'receiver.nonsense'"
    )
    assert SECRET not in result.stderr


OUTCOMES = ("applied", "stale", "ignored", "quarantined")
BY_DEFAULT = {"applied", "ignored", "quarantined"}


@pytest.mark.parametrize(
    ("outcomes", "wanted"),
    [(None, BY_DEFAULT), (["stale"], {"stale"}), (["applied", "stale"], {"applied", "stale"})],
)
def test_stale_events_go_only_where_outcomes_names_them(
    tmp_path: Path, outcomes: list[str] | None, wanted: set[str]
) -> None:
    """A stale event repeats or predates what a subscriber was sent: by default (in the file,
    and RECEIVER_FORWARD_URL's `default`) it is not sent."""
    file = write_destinations(
        tmp_path / "d.toml", GOOD | ({"outcomes": outcomes} if outcomes else {})
    )
    default, billing = settings_with(
        Path(file),
        RECEIVER_FORWARD_URL="http://product:9000/hooks",
        RECEIVER_FORWARD_SIGNING_SECRETS=new_secret(),
    ).forwarding
    assert {outcome for outcome in OUTCOMES if billing.wants("t", outcome)} == wanted
    assert {outcome for outcome in OUTCOMES if default.wants("t", outcome)} == BY_DEFAULT


def test_operational_events_go_only_where_event_types_name_them(tmp_path: Path) -> None:
    """`receiver.*` names every operational type, whatever its outcome; one type names that
    type alone; a destination naming no types, or only Rivya's, receives none of them."""
    file = write_destinations(
        tmp_path / "d.toml",
        GOOD | {"name": "ops", "event_types": ["receiver.*"]},
        GOOD | {"name": "low-credits", "event_types": ["receiver.credits.low"]},
        GOOD | {"name": "both", "event_types": ["generation.failed", "receiver.*"]},
        GOOD | {"name": "failures", "event_types": ["generation.failed"]},
        GOOD | {"name": "everything"},
    )
    ops, low_credits, both, failures, everything = settings_with(Path(file)).forwarding
    operational = [t.value for t in OperationalType]
    for outcome in OUTCOMES:
        assert all(ops.wants(t, outcome) for t in operational)
        assert all(both.wants(t, outcome) for t in operational)
        assert [t for t in operational if low_credits.wants(t, outcome)] == ["receiver.credits.low"]
        assert not any(d.wants(t, outcome) for d in (failures, everything) for t in operational)
    assert both.wants("generation.failed", "applied")
    assert not ops.wants("generation.failed", "applied")
    assert not ops.wants(None, "quarantined")
    assert everything.wants("generation.succeeded", "applied")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", '"fast"', "1e9", "-0.0"])
def test_max_per_second_out_of_range_is_one_line_naming_it(tmp_path: Path, value: str) -> None:
    """A rate that is not a positive number up to MAX_PER_SECOND stops start-up: `nan` and
    `inf` are TOML floats, and a rate of `inf` or `nan` would turn the limit off."""
    file = tmp_path / "d.toml"
    file.write_text(
        f'[[destinations]]\nname = "billing"\nurl = "{URL}"\nsigning_secrets = "{SECRET}"\n'
        f"max_per_second = {value}\n"
    )
    file.chmod(0o600)
    with pytest.raises(SettingsError) as raised:
        settings_with(file)
    text = str(raised.value)
    assert text.startswith(f"RECEIVER_DESTINATIONS_FILE {file}: destination 'billing': ")
    assert "max_per_second:" in text
    assert "\n" not in text
    assert SECRET.removeprefix("whsec_") not in text


@pytest.mark.parametrize(("value", "rate"), [("0.5", 0.5), ("20", 20.0), ("100000", 1e5)])
def test_max_per_second_takes_fractions_and_whole_numbers(
    tmp_path: Path, value: str, rate: float
) -> None:
    file = tmp_path / "d.toml"
    file.write_text(
        f'[[destinations]]\nname = "billing"\nurl = "{URL}"\nsigning_secrets = "{SECRET}"\n'
        f"max_per_second = {value}\n"
    )
    file.chmod(0o600)
    (billing,) = settings_with(file).forwarding
    assert billing.max_per_second == rate


def test_a_destination_without_max_per_second_is_unlimited(tmp_path: Path) -> None:
    (billing,) = settings_with(Path(write_destinations(tmp_path / "d.toml", GOOD))).forwarding
    assert billing.max_per_second is None


def test_worker_refuses_a_bad_max_per_second_with_one_line(tmp_path: Path) -> None:
    """Through the command itself: start-up stops, and says where."""
    bad = write_destinations(tmp_path / "bad.toml", GOOD | {"max_per_second": 0})
    env = {"RECEIVER_SIGNING_SECRETS": new_secret(), "RECEIVER_DESTINATIONS_FILE": bad}
    result = run_cli("worker", env=env, cwd=tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: RECEIVER_DESTINATIONS_FILE {bad}: destination 'billing': ")
    assert "max_per_second:" in line
