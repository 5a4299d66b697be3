"""POST /webhooks/rivya end to end: a real `receiver serve`, events signed by the
independent standardwebhooks package, the real SQLite file checked beside it."""

import asyncio
import signal
import socket
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa

from receiver.signatures import WebhookSecret, sign_headers
from tests.conftest import Rivya
from tests.helpers import HTTP, ReceiverProcess, make_event, new_secret, sign, signed


def count(db: sa.Connection, table: str, **where: str) -> int:
    clause = " AND ".join(f"{column} = :{column}" for column in where) or "1 = 1"
    query = f"SELECT count(*) FROM {table} WHERE {clause}"  # noqa: S608 - names chosen by tests
    return int(db.execute(sa.text(query), where).scalar_one())


def test_succeeded_event_is_stored_and_applied_to_its_record(rivya: Rivya) -> None:
    event = make_event()
    response = rivya.send(event)
    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "event_id": event["id"]}

    record = rivya.admin(f"/records/{event['data']['id']}").json()
    assert record["status"] == "succeeded"
    assert record["model"] == "z-image"
    assert (record["reserved_credits"], record["final_credits"]) == (4, 4)
    assert record["result_urls"] == event["data"]["result"]["urls"]
    assert (record["error_code"], record["error_message"]) == (None, None)
    assert record["last_event_id"] == event["id"]
    assert datetime.fromisoformat(record["updated_at"]) == datetime.fromisoformat(
        event["data"]["updated_at"]
    )

    stored = rivya.admin(f"/events/{event['id']}").json()
    assert stored["type"] == "generation.succeeded"
    assert stored["outcome"] == "applied"
    assert stored["payload"] == event
    assert stored["received_at"]
    assert len(stored["deliveries"]) == 1


def test_failed_event_records_the_error_and_returned_credits(rivya: Rivya) -> None:
    event = make_event("generation.failed")
    assert rivya.send(event).json()["status"] == "accepted"
    record = rivya.admin(f"/records/{event['data']['id']}").json()
    assert record["status"] == "failed"
    assert record["final_credits"] == 0
    assert record["result_urls"] == []
    assert record["error_code"] == "generation_failed"
    assert record["error_message"] == event["data"]["error"]["message"]


def test_raw_body_is_kept_byte_for_byte(rivya: Rivya, db: sa.Connection) -> None:
    event = make_event()
    body = b'{ "note": "spacing and key order are the sender\'s" , ' + orjson.dumps(event)[1:]
    assert rivya.post(body, sign(rivya.secret, body, event["id"])).status_code == 200
    stored = db.execute(
        sa.text("SELECT body FROM events WHERE id = :id"), {"id": event["id"]}
    ).scalar_one()
    assert stored == body


def test_redelivery_is_a_duplicate_with_no_side_effect(rivya: Rivya, db: sa.Connection) -> None:
    event = make_event()
    assert rivya.send(event).json()["status"] == "accepted"
    again = rivya.send(event)  # freshly signed, as Rivya's retry would be
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "event_id": event["id"]}
    assert count(db, "events", id=event["id"]) == 1
    assert count(db, "deliveries", event_id=event["id"]) == 1


def test_event_signed_with_the_previous_secret_is_accepted(
    rivya: Rivya, secrets_in_use: tuple[str, str]
) -> None:
    event = make_event()
    body, headers = signed(secrets_in_use[1], event)
    assert rivya.post(body, headers).json()["status"] == "accepted"


def test_any_matching_entry_among_several_is_enough(rivya: Rivya) -> None:
    event = make_event()
    body, headers = signed(rivya.secret, event)
    headers["webhook-signature"] = f"v2,abc v1,!!notbase64 v1,AAAA {headers['webhook-signature']}"
    assert rivya.post(body, headers).json()["status"] == "accepted"


Headers = dict[str, str]


def _resigned_at(offset_seconds: int) -> Callable[[bytes, Headers, str], Headers]:
    def change(body: bytes, headers: Headers, secret: str) -> Headers:
        moment = datetime.now(UTC) + timedelta(seconds=offset_seconds)
        return sign(secret, body, headers["webhook-id"], moment)

    return change


def _set(name: str, value: str | None) -> Callable[[bytes, Headers, str], Headers]:
    def change(_: bytes, headers: Headers, __: str) -> Headers:
        return {k: v for k, v in headers.items() if k != name} | ({name: value} if value else {})

    return change


def _foreign_signature(body: bytes, headers: Headers, _: str) -> Headers:
    return sign(new_secret(), body, headers["webhook-id"])


REJECTIONS = {
    "missing webhook-id": (_set("webhook-id", None), 401, "missing_header"),
    "missing webhook-timestamp": (_set("webhook-timestamp", None), 401, "missing_header"),
    "missing webhook-signature": (_set("webhook-signature", None), 401, "missing_header"),
    "fractional timestamp": (_set("webhook-timestamp", "1700000000.5"), 401, "invalid_header"),
    "negative timestamp": (_set("webhook-timestamp", "-1700000000"), 401, "invalid_header"),
    "word for a timestamp": (_set("webhook-timestamp", "now"), 401, "invalid_header"),
    "stale timestamp": (_resigned_at(-301), 401, "timestamp_out_of_tolerance"),
    "future timestamp": (_resigned_at(+301), 401, "timestamp_out_of_tolerance"),
    "unknown secret": (_foreign_signature, 401, "no_matching_signature"),
    "malformed signature": (_set("webhook-signature", "v1"), 401, "no_matching_signature"),
    "wrong content type": (_set("content-type", "text/plain"), 415, "unsupported_media_type"),
    "no content type": (_set("content-type", None), 415, "unsupported_media_type"),
}


@pytest.mark.parametrize("case", REJECTIONS, ids=list(REJECTIONS))
def test_rejected_delivery_stores_nothing(rivya: Rivya, db: sa.Connection, case: str) -> None:
    change, status, code = REJECTIONS[case]
    event = make_event()
    body, headers = signed(rivya.secret, event)
    response = rivya.post(body, change(body, headers, rivya.secret))
    assert response.status_code == status
    assert response.json()["error"] == code
    assert count(db, "events", id=event["id"]) == 0


def test_body_changed_after_signing_is_rejected(rivya: Rivya, db: sa.Connection) -> None:
    event = make_event()
    body, headers = signed(rivya.secret, event)
    response = rivya.post(body.replace(b'"z-image"', b'"y-image"'), headers)
    assert response.status_code == 401
    assert count(db, "events", id=event["id"]) == 0


def test_repeated_signature_header_is_rejected(rivya: Rivya, db: sa.Connection) -> None:
    event = make_event()
    body, headers = signed(rivya.secret, event)
    repeated = [*headers.items(), ("webhook-signature", headers["webhook-signature"])]
    response = HTTP.post(f"{rivya.server.url}/webhooks/rivya", content=body, headers=repeated)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_header"
    assert count(db, "events", id=event["id"]) == 0


def test_oversize_body_is_refused_with_413(rivya: Rivya, db: sa.Connection) -> None:
    event = make_event()
    event["padding"] = "x" * 70_000  # the server under test allows 65,536 bytes
    response = rivya.send(event)
    assert response.status_code == 413
    assert count(db, "events", id=event["id"]) == 0


def test_authentic_but_unparseable_body_is_quarantined(rivya: Rivya) -> None:
    body = b'["not", "an", "object"]'
    response = rivya.post(body, sign(rivya.secret, body, "msg_array_body"))
    assert response.status_code == 200
    assert response.json() == {"status": "quarantined", "event_id": "msg_array_body"}
    stored = rivya.admin("/events/msg_array_body").json()
    assert (stored["outcome"], stored["quarantine_reason"]) == ("quarantined", "not_an_object")
    assert stored["payload"] == ["not", "an", "object"]


def test_authentic_non_utf8_body_is_quarantined(rivya: Rivya) -> None:
    # standardwebhooks signs text only, so our own signer makes this one.
    body = b'{"id": "evt_\xff"}'
    headers = sign_headers([WebhookSecret.parse(rivya.secret)], "msg_not_utf8", body)
    response = rivya.post(body, {**headers, "content-type": "application/json"})
    assert response.json() == {"status": "quarantined", "event_id": "msg_not_utf8"}
    stored = rivya.admin("/events/msg_not_utf8").json()
    assert (stored["quarantine_reason"], stored["payload"]) == ("invalid_json", None)


def test_known_type_with_a_shape_we_do_not_understand_is_quarantined(rivya: Rivya) -> None:
    event = make_event()
    event["data"]["final_credits"] = "four"
    response = rivya.send(event)
    assert response.json() == {"status": "quarantined", "event_id": event["id"]}
    stored = rivya.admin(f"/events/{event['id']}").json()
    assert stored["quarantine_reason"] == "invalid_credits"
    assert rivya.admin(f"/records/{event['data']['id']}").status_code == 404


@pytest.mark.parametrize("field", ["created_at", "data.updated_at"])
def test_a_time_utc_cannot_hold_is_quarantined_not_refused(rivya: Rivya, field: str) -> None:
    """9999-12-31T23:59:59-01:00 is a valid time past year 9999 in UTC: it was a 500 on
    every retry, and nothing stored."""
    event = make_event()
    *parents, leaf = field.split(".")
    (event[parents[0]] if parents else event)[leaf] = "9999-12-31T23:59:59-01:00"
    response = rivya.send(event)
    assert (response.status_code, response.json()) == (
        200,
        {"status": "quarantined", "event_id": event["id"]},
    )
    stored = rivya.admin(f"/events/{event['id']}").json()
    assert stored["quarantine_reason"] == f"invalid_{leaf}"
    assert stored["payload"] == event


def test_nul_characters_are_stored_on_every_backend(rivya: Rivya, db: sa.Connection) -> None:
    """On PostgreSQL a NUL in a text column failed the insert: 503 for ever. In a field the
    record keeps as an identifier it quarantines the event; in an error message it is shown
    as U+FFFD; anywhere else it is only in the raw body, kept byte for byte."""
    in_model = make_event()
    in_model["data"]["model"] = "z-\x00image"
    in_message = make_event("generation.failed")
    in_message["data"]["error"]["message"] = "out of\x00memory"
    elsewhere = make_event()
    elsewhere["data"]["usage"] = {"note": "\x00"}
    for event in (in_model, in_message, elsewhere):
        assert rivya.send(event).status_code == 200
        body = db.execute(
            sa.text("SELECT body FROM events WHERE id = :id"), {"id": event["id"]}
        ).scalar_one()
        assert bytes(body) == orjson.dumps(event)
        assert b"\\u0000" in bytes(body)
    assert rivya.admin(f"/events/{in_model['id']}").json()["quarantine_reason"] == (
        "invalid_characters"
    )
    record = rivya.admin(f"/records/{in_message['data']['id']}").json()
    assert (record["status"], record["error_message"]) == ("failed", "out of\ufffdmemory")
    assert rivya.admin(f"/events/{elsewhere['id']}").json()["outcome"] == "applied"


def test_unknown_event_type_is_stored_but_not_applied(rivya: Rivya, db: sa.Connection) -> None:
    event = make_event()
    event["type"] = "generation.progressed"
    assert rivya.send(event).json()["status"] == "accepted"
    assert rivya.admin(f"/events/{event['id']}").json()["outcome"] == "ignored"
    assert rivya.admin(f"/records/{event['data']['id']}").status_code == 404
    assert count(db, "deliveries", event_id=event["id"]) == 1


def test_out_of_order_and_post_terminal_events_never_regress_the_record(rivya: Rivya) -> None:
    task_id = "task_out_of_order"
    t1 = datetime.now(UTC) - timedelta(minutes=5)
    newer = make_event(
        "generation.succeeded", task_id=task_id, updated_at=t1 + timedelta(minutes=2)
    )
    older = make_event("generation.failed", task_id=task_id, updated_at=t1)
    later = make_event("generation.failed", task_id=task_id, updated_at=t1 + timedelta(minutes=4))

    for event in (newer, older, later):
        assert rivya.send(event).json()["status"] == "accepted"

    record = rivya.admin(f"/records/{task_id}").json()
    assert (record["status"], record["last_event_id"]) == ("succeeded", newer["id"])
    outcomes = [rivya.admin(f"/events/{e['id']}").json()["outcome"] for e in (newer, older, later)]
    assert outcomes == ["applied", "stale", "stale"]


def test_duplicate_storm_updates_the_record_once(rivya: Rivya, db: sa.Connection) -> None:
    event = make_event()
    body, headers = signed(rivya.secret, event)
    rivya.sensitive.add(headers["webhook-signature"])

    async def storm() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=rivya.server.url, timeout=30) as client:
            return await asyncio.gather(
                *(client.post("/webhooks/rivya", content=body, headers=headers) for _ in range(48))
            )

    statuses = sorted(r.json()["status"] for r in asyncio.run(storm()))
    assert statuses == ["accepted"] + ["duplicate"] * 47
    assert count(db, "events", id=event["id"]) == 1
    assert count(db, "deliveries", event_id=event["id"]) == 1
    assert count(db, "records", task_id=event["data"]["id"], last_event_id=event["id"]) == 1


def test_kill_and_restart_keeps_every_acknowledged_event(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya
) -> None:
    process = start_server()
    sender = Rivya(process, rivya.secret, rivya.sensitive)
    events = [make_event() for _ in range(30)]
    assert all(sender.send(event).status_code == 200 for event in events)
    assert process.stop(signal.SIGKILL) == -signal.SIGKILL

    process.start()
    for event in events:
        assert sender.admin(f"/events/{event['id']}").json()["outcome"] == "applied"
    assert sender.send(events[0]).json()["status"] == "duplicate"


@pytest.mark.sqlite_only
def test_locked_database_gives_503_with_retry_after_never_2xx(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya, tmp_path: Path
) -> None:
    process = start_server(database_busy_timeout_seconds="0.3")
    sender = Rivya(process, rivya.secret, rivya.sensitive)
    event = make_event()
    locker = sqlite3.connect(tmp_path / "receiver.db", isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        refused = sender.send(event)
        assert refused.status_code == 503
        assert refused.headers["retry-after"].isdigit()
        locker.execute("ROLLBACK")
        assert sender.send(event).json()["status"] == "accepted"
    finally:
        locker.close()


def test_sender_hanging_up_mid_body_is_not_a_server_error(
    start_server: Callable[..., ReceiverProcess],
) -> None:
    process = start_server()
    with socket.create_connection(("127.0.0.1", process.port)) as sock:
        sock.sendall(
            b"POST /webhooks/rivya HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"webhook-id: a\r\nwebhook-timestamp: 1\r\nwebhook-signature: v1,x\r\n"
            b'content-length: 1000\r\n\r\n{"partial": '
        )
    process.stop()
    output = process.output()
    assert '"reason":"client_disconnected"' in output
    assert "Exception in ASGI application" not in output
