"""Test sends through a real `receiver serve` and real subscribers on loopback
(`POST /admin/destinations/{name}/ping`): what each answered is shown (status, time, the
start of its body, escaped), the subscriber verifies the signature with `standardwebhooks`,
and nothing is stored or counted."""

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from receiver.forward.ping import escape_body
from tests.conftest import ADMIN_TOKEN, Rivya
from tests.databases import reading
from tests.forward.answering import Answer, AnsweringSink
from tests.helpers import HTTP, make_event, only, wait_until, write_destinations

TIMEOUT_SECONDS = 2  # the suite's RECEIVER_FORWARD_TIMEOUT_SECONDS
MARKER = f"answer-{secrets.token_hex(8)}"
HOSTILE = b"<script>alert(1)</script>\x00\xff\xfe caf\xc3\xa9 back\\slash\r\nnext\tline"
ANSWERS = {
    "ok": Answer(200, f'{{"received": true, "marker": "{MARKER}"}}'.encode()),
    "broken": Answer(500, HOSTILE),
    "long": Answer(500, bytes(range(32, 127)) * 30),
    "hanging": Answer(hang=30),
    "endless": Answer(200, b"y" * 4096, declared_length=100 * 2**20),
    "gone": Answer(410, b"retired"),
}
# Every destination but `gone` wants no event at all: a ping is sent whatever the filters.
NOTHING = ["nothing.matches"]


@pytest.fixture(scope="module")
def sinks(forward_secret: str, backend: str) -> Iterator[dict[str, AnsweringSink]]:
    """Fresh for each backend's server (`backend`), so that each counts only its own."""
    made = {name: AnsweringSink(forward_secret, answer) for name, answer in ANSWERS.items()}
    # A redirect to `ok`'s sink: followed, `ok` would receive the ping.
    made["moved"] = AnsweringSink(forward_secret, Answer(302, headers={"location": made["ok"].url}))
    yield made
    for sink in made.values():
        sink.stop()


@pytest.fixture(scope="module")
def server_env(
    workdir: Path,
    secrets_in_use: tuple[str, str],
    forward_secret: str,
    new_database: Callable[[Path], str],
    sinks: dict[str, AnsweringSink],
) -> dict[str, str]:
    tables = [
        {
            "name": name,
            "url": sink.url,
            "signing_secrets": forward_secret,
            **({} if name == "gone" else {"event_types": NOTHING}),
        }
        for name, sink in sinks.items()
    ]
    file = write_destinations(workdir / "destinations.toml", *tables)
    return {
        "RECEIVER_DATABASE_URL": new_database(workdir),
        "RECEIVER_SIGNING_SECRETS": ",".join(secrets_in_use),
        "RECEIVER_ADMIN_TOKEN": ADMIN_TOKEN,
        "RECEIVER_FORWARD_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
        "RECEIVER_FORWARD_LEASE_SECONDS": "3",
        **{f"RECEIVER_{key.upper()}": value for key, value in only(file).items()},
    }


def ping(rivya: Rivya, name: str, **kwargs: Any) -> httpx.Response:
    return rivya.admin(f"/destinations/{name}/ping", "POST", timeout=30, **kwargs)


def answer_of(rivya: Rivya, name: str) -> dict[str, Any]:
    asked = ping(rivya, name)
    assert asked.status_code == 200, asked.text
    return dict(asked.json())


def test_a_2xx_is_shown_and_the_subscriber_verifies_the_signature(
    rivya: Rivya, sinks: dict[str, AnsweringSink]
) -> None:
    """Sent to `ok` though its filters want no event; signed with its secret."""
    answer = answer_of(rivya, "ok")
    assert answer["ok"] is True
    assert (answer["http_status"], answer["failure"], answer["error_class"]) == (200, None, None)
    assert answer["body"] == f'{{"received": true, "marker": "{MARKER}"}}'
    assert answer["body_truncated"] is False
    assert answer["duration_ms"] >= 0
    assert answer["event_id"].startswith("receiver:ping:")

    (pinged,) = sinks["ok"].received
    assert pinged.headers["webhook-id"] == answer["event_id"]
    assert pinged.verified == {
        "id": answer["event_id"],
        "type": "receiver.ping",
        "api_version": None,
        "created_at": pinged.verified["created_at"] if pinged.verified else None,
        "source": "receiver",
        "data": {"destination": "ok"},
    }
    # The audit line names who and where; the body is never logged.
    output = rivya.server.output()
    assert '"who":"admin-api","what":"ping"' in output
    assert MARKER not in output


def test_a_500_is_shown_with_its_body_escaped(rivya: Rivya) -> None:
    """NUL, invalid UTF-8 and a CR as \\xNN, a backslash doubled, `<script>` as text (the
    console escapes it for HTML on top)."""
    answer = answer_of(rivya, "broken")
    assert (answer["ok"], answer["http_status"], answer["failure"]) == (False, 500, "HTTP 500")
    assert answer["body"] == (
        "<script>alert(1)</script>\\x00\\xff\\xfe caf\\xc3\\xa9 back\\\\slash\\x0d\nnext\tline"
    )


def test_a_long_body_is_cut_to_its_first_512_bytes(rivya: Rivya) -> None:
    answer = answer_of(rivya, "long")
    assert answer["body"] == (bytes(range(32, 127)) * 30)[:512].decode().replace("\\", "\\\\")
    assert answer["body_truncated"] is True


def test_a_body_that_never_ends_is_not_waited_for(
    rivya: Rivya, sinks: dict[str, AnsweringSink]
) -> None:
    """100 MiB declared, 4 KiB sent, then nothing: 512 bytes are read, the rest left."""
    started = time.monotonic()
    answer = answer_of(rivya, "endless")
    assert time.monotonic() - started < TIMEOUT_SECONDS
    assert (answer["ok"], answer["body"], answer["body_truncated"]) == (True, "y" * 512, True)


def test_a_hanging_subscriber_is_shown_as_timed_out_within_the_timeout(rivya: Rivya) -> None:
    started = time.monotonic()
    answer = answer_of(rivya, "hanging")
    assert time.monotonic() - started < TIMEOUT_SECONDS + 1.5
    assert (answer["ok"], answer["http_status"], answer["body"]) == (False, None, "")
    assert answer["failure"].startswith("timed out after ")
    assert answer["error_class"] in {"TimeoutError", "ServerTimeoutError"}


def test_a_redirect_is_shown_not_followed(rivya: Rivya, sinks: dict[str, AnsweringSink]) -> None:
    before = len(sinks["ok"].received)
    answer = answer_of(rivya, "moved")
    assert (answer["ok"], answer["http_status"], answer["failure"]) == (False, 302, "HTTP 302")
    assert len(sinks["moved"].received) >= 1
    assert len(sinks["ok"].received) == before


def stored(database_url: str) -> tuple[int, ...]:
    with reading(database_url) as db:
        return tuple(
            db.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM deliveries),"
                    " (SELECT count(*) FROM attempts), (SELECT count(*) FROM destination_health),"
                    " (SELECT count(*) FROM disabled_destinations)"
                )
            ).one()
        )


def delivery_metrics(rivya: Rivya) -> list[str]:
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    text = HTTP.get(f"{rivya.server.url}/metrics", headers=headers).text
    return [line for line in text.splitlines() if line.startswith("receiver_deliver")]


def test_nothing_is_stored_or_counted(rivya: Rivya, server_env: dict[str, str]) -> None:
    """No event, delivery, attempt or health row, no disabling (`gone` answers 410), and
    the delivery metrics unchanged."""
    before, metrics = stored(server_env["RECEIVER_DATABASE_URL"]), delivery_metrics(rivya)
    for name in ("ok", "broken", "moved", "gone"):
        answer_of(rivya, name)
    assert stored(server_env["RECEIVER_DATABASE_URL"]) == before
    assert delivery_metrics(rivya) == metrics


@pytest.mark.parametrize("name", ["nowhere", "OK", "%2E%2E", "x" * 65, "a%00b"])
def test_an_unknown_destination_is_refused(
    rivya: Rivya, sinks: dict[str, AnsweringSink], name: str
) -> None:
    """404; a NUL in the address is refused before routing (400), as everywhere."""
    sent = sum(len(sink.received) for sink in sinks.values())
    refused = ping(rivya, name)
    if "%00" in name:
        assert refused.status_code == 400
    else:
        assert (refused.status_code, refused.json()["error"]) == (404, "not_found")
        assert refused.json()["detail"].endswith("is not configured")
    assert sum(len(sink.received) for sink in sinks.values()) == sent


def test_a_body_with_anything_in_it_is_refused(
    rivya: Rivya, sinks: dict[str, AnsweringSink]
) -> None:
    before = len(sinks["ok"].received)
    refused = ping(rivya, "ok", content=b'{"destination": "broken"}')
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_request")
    assert len(sinks["ok"].received) == before


def test_only_the_admin_token_sends(rivya: Rivya, sinks: dict[str, AnsweringSink]) -> None:
    before = len(sinks["ok"].received)
    refused = HTTP.post(f"{rivya.server.url}/admin/destinations/ok/ping")
    assert refused.status_code == 401
    assert len(sinks["ok"].received) == before
    assert answer_of(rivya, "ok")["ok"] is True
    assert len(sinks["ok"].received) == before + 1


def test_pings_beyond_the_bound_in_flight_are_refused_with_429(
    rivya: Rivya, sinks: dict[str, AnsweringSink]
) -> None:
    """Four hang on `hanging`; a fifth, even to `ok`, is refused at once and sends nothing."""
    answers: list[httpx.Response] = []
    held = [
        threading.Thread(target=lambda: answers.append(ping(rivya, "hanging"))) for _ in range(4)
    ]
    before = len(sinks["hanging"].received)
    for thread in held:
        thread.start()
    wait_until(lambda: len(sinks["hanging"].received) == before + 4, timeout=5)
    sent_to_ok = len(sinks["ok"].received)
    refused = ping(rivya, "ok")
    assert (refused.status_code, refused.json()["error"]) == (429, "too_many_pings")
    assert refused.headers["retry-after"].isdigit()
    assert len(sinks["ok"].received) == sent_to_ok
    for thread in held:
        thread.join(timeout=TIMEOUT_SECONDS + 5)
    assert [a.status_code for a in answers] == [200] * 4
    # The bound is of pings in flight: once they end, the next is sent.
    assert answer_of(rivya, "ok")["ok"] is True


def test_a_disabled_destination_is_still_pinged(
    rivya: Rivya, sinks: dict[str, AnsweringSink], server_env: dict[str, str]
) -> None:
    """`gone` is disabled by a real delivery's 410; a ping still reaches it."""
    event = make_event()
    assert rivya.send(event).json()["status"] == "accepted"

    def disabled() -> bool:
        with reading(server_env["RECEIVER_DATABASE_URL"]) as db:
            found = db.execute(sa.text("SELECT destination FROM disabled_destinations"))
            return list(found.scalars()) == ["gone"]

    wait_until(disabled, timeout=10)
    before = len(sinks["gone"].received)
    answer = answer_of(rivya, "gone")
    assert (answer["http_status"], answer["body"]) == (410, "retired")
    assert len(sinks["gone"].received) == before + 1


@given(st.binary(max_size=600))
def test_the_escaped_body_is_printable_and_reads_back_to_the_bytes(raw: bytes) -> None:
    shown = escape_body(raw)
    assert all(" " <= c <= "~" or c in "\t\n" for c in shown)
    assert shown.encode().decode("unicode_escape").encode("latin-1") == raw
