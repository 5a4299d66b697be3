"""Hostile requests against a real server, byte for byte as an attacker can send them:
each gets a 4xx and stores nothing. Also: replayed captures and slow clients."""

import base64
import hmac
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import orjson
import sqlalchemy as sa

from receiver.signatures import WebhookSecret
from tests.conftest import Rivya
from tests.helpers import HTTP, ReceiverProcess, make_event
from tests.reliability.conftest import Figures

Headers = list[tuple[bytes, bytes]]

SLOW_CONNECTIONS = 400
SLOW_DEADLINE_SECONDS = 2.0
# asyncio may run a timer up to its clock's resolution early, and the clocks of this
# process and the server's are read at slightly different moments.
EARLY_TOLERANCE_SECONDS = 0.1


def raw_signature(secret: str, msg_id: bytes, timestamp: bytes, body: bytes) -> bytes:
    """A correct v1 signature over any bytes at all, so that a case is refused for what it
    is meant to test rather than for a signature mismatch."""
    key = WebhookSecret.parse(secret).reveal().removeprefix("whsec_")
    digest = hmac.digest(base64.b64decode(key), msg_id + b"." + timestamp + b"." + body, "sha256")
    return b"v1," + base64.b64encode(digest)


def http_request(
    body: bytes,
    headers: Headers,
    method: bytes = b"POST",
    path: bytes = b"/webhooks/rivya",
    content_length: bool = True,
) -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"host: receiver", b"connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if content_length:
        lines.append(b"content-length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def status_of(port: int, request: bytes) -> int:
    """The status the server answers. A server that answers before reading the whole
    request (413, 431) closes with bytes unread, and the reset that follows can overtake
    its answer; such a case is sent again."""
    for _ in range(5):
        answer = b""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            try:
                sock.sendall(request)
                while chunk := sock.recv(65536):
                    answer += chunk
            except (ConnectionResetError, BrokenPipeError):
                pass
        if answer.startswith(b"HTTP/1.1 "):
            return int(answer.split(b" ", 2)[1])
    raise AssertionError(f"no answer to {request[:60]!r}")


def corpus(secret: str) -> Iterator[tuple[str, bytes]]:
    """(name, the request's bytes): malformed, unauthentic or outside our contract."""
    body = orjson.dumps(make_event(event_id="evt_hostile"))
    now = str(int(time.time())).encode()

    def signed_as(
        msg_id: bytes = b"evt_hostile", timestamp: bytes = now, payload: bytes = body
    ) -> Headers:
        return [
            (b"content-type", b"application/json"),
            (b"webhook-id", msg_id),
            (b"webhook-timestamp", timestamp),
            (b"webhook-signature", raw_signature(secret, msg_id, timestamp, payload)),
        ]

    good = signed_as()
    json_only = good[:1]

    yield "empty body, no headers", http_request(b"", [])
    yield "empty body, signed headers of another body", http_request(b"", good)
    yield "binary body", http_request(random.Random(1).randbytes(512), good)
    yield "non-UTF-8 body", http_request(b'{"id": "\xff\xfe"}', good)
    yield "deeply nested JSON", http_request(b"[" * 50_000 + b"]" * 50_000, good)
    yield "lone surrogate", http_request(b'{"id": "\\ud800"}', good)
    for timestamp in (
        b"",
        b"-1",
        b"-1700000000",
        b"1.5",
        b"1e9",
        b"99999999999999999999999999999",
        b"+" + now,
        b" " + now + b"x",
        b"0x10",
        "\u0661\u0667\u0660\u0660".encode(),  # Arabic-Indic digits
        b"NaN",
        b"0",
        b"99999999999",
    ):
        yield f"timestamp {timestamp!r}", http_request(body, signed_as(timestamp=timestamp))
    for case, signature in (
        ("10 kB signature", b"v1," + b"A" * 10_000),
        ("thousands of v1 entries", b" ".join([b"v1,"] * 3_000)),
        ("v1 entries that are not base64", b"v1,*** v1,=== v1,\x01\x02"),
        ("other schemes only", b"v1a,abc v2,abc"),
        ("no scheme", b"just-a-string"),
    ):
        yield case, http_request(body, [*good[:3], (b"webhook-signature", signature)])
    for header in (b"webhook-signature", b"webhook-id", b"webhook-timestamp"):
        twice = [*good, (header, dict(good)[header])]
        yield f"{header.decode()} given twice", http_request(body, twice)
        missing = [h for h in good if h[0] != header]
        yield f"no {header.decode()}", http_request(body, missing)
    for content_type in (
        None,
        b"text/plain",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=x",
        b"application/jsonx",
        b"",
    ):
        headers = [(b"content-type", content_type)] if content_type is not None else []
        yield f"content type {content_type!r}", http_request(body, headers + good[1:])
    yield "id with bytes outside ASCII", http_request(body, signed_as(msg_id=b"evt_\xff\xfe"))
    yield "10 kB id", http_request(body, signed_as(msg_id=b"e" * 10_000))
    yield "expired but authentic", http_request(body, signed_as(timestamp=b"1700000000"))
    yield "wrong secret", http_request(body, [*good[:3], (b"webhook-signature", b"v1,AAAA")])
    yield "body over the limit", http_request(b" " * 70_000 + body, good)
    yield (
        "negative content-length",
        http_request(body, [*good, (b"content-length", b"-1")], content_length=False),
    )
    yield (
        "content-length and chunked",
        http_request(body, [*good, (b"transfer-encoding", b"chunked")]),
    )
    yield "70 kB of headers", http_request(body, [*good, (b"x-padding", b"p" * 70_000)])
    yield "GET", http_request(b"", json_only, method=b"GET")
    yield "PUT", http_request(body, good, method=b"PUT")
    yield "unknown path", http_request(body, good, path=b"/webhooks/other")
    yield "garbage request line", b"GARBAGE\r\n\r\n"
    yield "bare line feeds", http_request(body, good).replace(b"\r\n", b"\n")
    yield "admin without a token", http_request(b"", [], method=b"GET", path=b"/admin/events")
    yield (
        "admin with a wrong token",
        http_request(
            b"", [(b"authorization", b"Bearer not-it")], method=b"GET", path=b"/admin/events"
        ),
    )


def test_hostile_corpus_gets_only_4xx_and_stores_nothing(
    rivya: Rivya, db: sa.Connection, figures: Figures
) -> None:
    def stored() -> int:
        return int(db.execute(sa.text("SELECT count(*) FROM events")).scalar_one())

    before = stored()
    statuses = {
        name: status_of(rivya.server.port, request) for name, request in corpus(rivya.secret)
    }
    assert {name: s for name, s in statuses.items() if not 400 <= s < 500} == {}
    assert statuses["70 kB of headers"] == 431
    assert statuses["body over the limit"] == 413
    assert statuses["expired but authentic"] == 401
    assert statuses["content type b'text/plain'"] == 415
    assert stored() == before
    assert "Exception in ASGI application" not in rivya.server.output()
    figures.add("hostile corpus", requests=len(statuses), non_4xx=0, stored=stored() - before)


def test_captured_request_is_a_duplicate_within_the_window_and_refused_after(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya, figures: Figures
) -> None:
    process = start_server(timestamp_tolerance_seconds="2")
    sender = Rivya(process, rivya.secret, rivya.sensitive)
    event = make_event()
    response = sender.send(event)
    assert response.json()["status"] == "accepted"
    captured = response.request

    again = HTTP.post(captured.url, content=captured.content, headers=captured.headers)
    assert again.json()["status"] == "duplicate"
    time.sleep(3.5)
    late = HTTP.post(captured.url, content=captured.content, headers=captured.headers)
    assert (late.status_code, late.json()["error"]) == (401, "timestamp_out_of_tolerance")
    figures.add("replayed captures", within_window_duplicate=1, after_window_refused=1)


def test_slow_clients_neither_starve_deliveries_nor_stay_connected(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya, backend: str, figures: Figures
) -> None:
    """Rivya is served while 400 slow connections are open; each is cut with 408 at the
    deadline: not before it (less the timer's tolerance), and not long after."""
    process = start_server(request_timeout_seconds=str(SLOW_DEADLINE_SECONDS))
    sender = Rivya(process, rivya.secret, rivya.sensitive)
    opened: dict[socket.socket, float] = {}
    cut: dict[socket.socket, float] = {}
    with ExitStack() as stack, selectors.DefaultSelector() as selector:
        for index in range(SLOW_CONNECTIONS):
            started = time.monotonic()  # before the server can have seen it
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", process.port)))
            if index % 8:  # headers that never end
                sock.sendall(b"POST /webhooks/rivya HTTP/1.1\r\nhost: receiver\r\nx-a: 1\r\n")
            else:  # a body that never arrives in full
                sock.sendall(http_request(b"{", [(b"content-type", b"application/json")])[:-1])
            opened[sock] = started
            selector.register(sock, selectors.EVENT_READ)

        def rivya_beside_them() -> None:
            with socket.create_connection(("127.0.0.1", process.port)) as flood:
                flood.sendall(b"POST /webhooks/rivya HTTP/1.1\r\n")
                for _ in range(100):  # header lines that never end, a kilobyte at a time
                    flood.sendall(b"x-a: " + b"a" * 1024 + b"\r\n")
                beside["flood"] = flood.recv(64).startswith(b"HTTP/1.1 431 ")
            # Rivya is served while every slow connection is still open.
            beside["rivya"] = sender.send(make_event()).status_code == 200

        # Rivya in a thread, so that this one sees each slow connection's answer as it comes.
        beside: dict[str, bool] = {}
        thread = threading.Thread(target=rivya_beside_them)
        thread.start()
        give_up = time.monotonic() + SLOW_DEADLINE_SECONDS + 10
        while len(cut) < len(opened) and time.monotonic() < give_up:
            for key, _ in selector.select(timeout=0.5):
                cut[key.fileobj] = time.monotonic()  # type: ignore[index]
                selector.unregister(key.fileobj)
        thread.join(timeout=30)
        assert beside == {"flood": True, "rivya": True}
        assert len(cut) == len(opened), "slow connections left open"
        answers = {sock.recv(64).split(b"\r\n")[0] for sock in opened}
        assert answers == {b"HTTP/1.1 408 Request Timeout"}
    waited = sorted(cut[sock] - opened[sock] for sock in opened)
    assert waited[0] >= SLOW_DEADLINE_SECONDS - EARLY_TOLERANCE_SECONDS, waited[0]
    figures.add(
        f"slow clients, {backend}",
        connections=len(opened),
        cut_with_408=len(cut),
        earliest_cut_ms=round(waited[0] * 1000),
        latest_cut_ms=round(waited[-1] * 1000),
    )
