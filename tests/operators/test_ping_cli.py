"""`receiver destinations ping NAME [--json]` as an operator types it, against real
subscribers on loopback: its answer printed, exit 0 on a 2xx and 1 otherwise, and no
database touched."""

from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from tests.forward.answering import Answer, AnsweringSink
from tests.helpers import new_secret, only, run_cli, write_destinations

Ping = Callable[..., tuple[int, str, str]]


@pytest.fixture
def sinks(forward_secret: str) -> Iterator[dict[str, AnsweringSink]]:
    made = {
        "ok": AnsweringSink(forward_secret, Answer(201, b'{"seen": true}')),
        "broken": AnsweringSink(forward_secret, Answer(500, b"<b>\x00\xff</b>" + b"z" * 600)),
        "hanging": AnsweringSink(forward_secret, Answer(hang=30)),
    }
    yield made
    for sink in made.values():
        sink.stop()


@pytest.fixture
def ping(tmp_path: Path, forward_secret: str, sinks: dict[str, AnsweringSink]) -> Ping:
    tables = [
        {"name": name, "url": sink.url, "signing_secrets": forward_secret}
        for name, sink in sinks.items()
    ]
    file = write_destinations(tmp_path / "destinations.toml", *tables)
    env = {
        "RECEIVER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'receiver.db'}",
        "RECEIVER_SIGNING_SECRETS": new_secret(),
        "RECEIVER_FORWARD_TIMEOUT_SECONDS": "1",
        "RECEIVER_FORWARD_LEASE_SECONDS": "3",
        **{f"RECEIVER_{key.upper()}": value for key, value in only(file).items()},
    }

    def run(*args: str) -> tuple[int, str, str]:
        done = run_cli("destinations", "ping", *args, env=env, cwd=tmp_path)
        return done.returncode, done.stdout, done.stderr

    return run


def test_a_2xx_prints_the_answer_and_exits_0_without_a_database(
    ping: Ping, sinks: dict[str, AnsweringSink], tmp_path: Path
) -> None:
    code, out, err = ping("ok")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["destination", "ok"]
    assert lines[2].split() == ["http_status", "201"]
    assert lines[3].split() == ["failure", "-"]
    assert lines[-2:] == ["body:", '{"seen": true}']
    (pinged,) = sinks["ok"].received
    assert pinged.verified is not None
    assert pinged.verified["type"] == "receiver.ping"
    assert f"event_id     {pinged.headers['webhook-id']}" in out
    # Audited on stderr (stdout stays the answer's); the body is not logged.
    assert '"who":"cli","what":"ping","destination":"ok"' in err
    assert "seen" not in err
    assert not (tmp_path / "receiver.db").exists()


def test_json_on_a_500_shows_the_body_escaped_and_cut_and_exits_1(ping: Ping) -> None:
    code, out, _ = ping("broken", "--json")
    assert code == 1
    answer = orjson.loads(out)
    assert (answer["ok"], answer["http_status"], answer["failure"]) == (False, 500, "HTTP 500")
    assert answer["body"] == "<b>\\x00\\xff</b>" + "z" * (512 - 9)
    assert answer["body_truncated"] is True


def test_a_hanging_subscriber_prints_the_timeout_and_exits_1(ping: Ping) -> None:
    code, out, _ = ping("hanging")
    assert code == 1
    assert "failure      timed out after 1 s" in out
    assert "http_status  -" in out


def test_an_unknown_destination_is_one_line_and_exit_1(
    ping: Ping, sinks: dict[str, AnsweringSink]
) -> None:
    code, out, err = ping("nowhere")
    assert (code, out) == (1, "")
    assert err == "Error: destination: 'nowhere' is not configured\n"
    assert all(not sink.received for sink in sinks.values())
