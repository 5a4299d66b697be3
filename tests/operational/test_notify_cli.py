"""`receiver notify test` as an operator types it, against real loopback endpoints through
Apprise's `json://`: each URL's result by position and scheme, exit 1 when any failed or
none is set, and never a URL or its token in the output."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import new_secret, run_cli
from tests.notify_endpoint import ERROR, NotifyEndpoint


@pytest.fixture
def endpoints() -> Iterator[tuple[NotifyEndpoint, NotifyEndpoint]]:
    good, bad = NotifyEndpoint(), NotifyEndpoint(ERROR)
    yield good, bad
    good.stop()
    bad.stop()


def environment(*urls: str) -> dict[str, str]:
    env = {"RECEIVER_SIGNING_SECRETS": new_secret(), "RECEIVER_LOG_LEVEL": "debug"}
    return env | ({"RECEIVER_NOTIFY_URLS": ", ".join(urls)} if urls else {})


def assert_no_secret(text: str, *endpoints: NotifyEndpoint) -> None:
    for endpoint in endpoints:
        for secret in (*endpoint.secrets(), endpoint.url()):
            assert secret not in text


def test_every_url_takes_the_test_message(
    endpoints: tuple[NotifyEndpoint, NotifyEndpoint], tmp_path: Path
) -> None:
    good, _ = endpoints
    result = run_cli("notify", "test", env=environment(good.url(), good.url()), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1 json: sent\n2 json: sent\n"
    sent = good.wait_for(2)
    assert {s.title for s in sent} == {"Test message from the Rivya webhook receiver"}
    assert_no_secret(result.stdout + result.stderr, good)


def test_a_refusing_url_is_reported_by_position_and_the_exit_code_is_1(
    endpoints: tuple[NotifyEndpoint, NotifyEndpoint], tmp_path: Path
) -> None:
    good, bad = endpoints
    env = environment(good.url(), bad.url())
    result = run_cli("notify", "test", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == "1 json: sent\n2 json: failed (NotDelivered)\n"
    assert result.stderr.splitlines()[-1] == (
        "Error: not every notification URL took the test message"
    )
    assert bad.requests == 1  # one try each: a test reports, it does not insist
    as_json = run_cli("notify", "test", "--json", env=env, cwd=tmp_path)
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == [
        {"position": 1, "scheme": "json", "ok": True, "error": None},
        {"position": 2, "scheme": "json", "ok": False, "error": "NotDelivered"},
    ]
    for output in (result, as_json):
        assert_no_secret(output.stdout + output.stderr, good, bad)


def test_json_output_when_every_url_took_it(
    endpoints: tuple[NotifyEndpoint, NotifyEndpoint], tmp_path: Path
) -> None:
    good, _ = endpoints
    result = run_cli("notify", "test", "--json", env=environment(good.url()), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"position": 1, "scheme": "json", "ok": True, "error": None}
    ]


def test_no_urls_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = run_cli("notify", "test", env=environment(), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "Error: RECEIVER_NOTIFY_URLS is not set\n"


def test_a_bad_url_is_one_line_naming_its_position_never_its_text(tmp_path: Path) -> None:
    token = "tok" + new_secret()[-20:]
    good = f"json://127.0.0.1:9/hook/{token}"
    bad = f"nosuchservice://{token}@example.com/{token}"
    result = run_cli("notify", "test", env=environment(good, bad), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        "Error: RECEIVER_NOTIFY_URLS: URL 2 is not a URL Apprise can send to\n"
    )
    assert token not in result.stdout + result.stderr
