"""Every route that reads a body reads it bounded, against a real server: a sign-in or admin
body past 64 KiB is refused with 413 and the rest goes unread (the process's memory stays
flat), a multipart one is refused unread, and a body dripping in is cut at the deadline."""

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.console.access import SIGN_IN_COOKIE
from receiver.console.forms import MAX_FORM_FIELDS
from tests.conftest import ADMIN_TOKEN
from tests.helpers import HTTP, ReceiverProcess

DEADLINE_SECONDS = 2.0
HOSTILE_BYTES = 64 * 1024 * 1024
# The cap on forms and admin JSON that README and RELIABILITY.md state, written out rather
# than read from receiver.bodies: a raised cap must fail here, not move the test with it.
DOCUMENTED_CAP_BYTES = 64 * 1024
# The server's resident memory may move by this much over a hostile body: what a few
# requests' worth of buffers and allocator slack cost, far under the body's 64 MiB.
RSS_SLACK_BYTES = 4 * 1024 * 1024
CHUNK = b"token=" + b"a" * (64 * 1024 - 6)
BOUNDARY = b"bound4ry"
MULTIPART_HEAD = (
    b"--" + BOUNDARY + b'\r\ncontent-disposition: form-data; name="token"; filename="t.bin"\r\n'
    b"content-type: application/octet-stream\r\n\r\n"
)
SIGN_IN_HEADERS = [(b"cookie", SIGN_IN_COOKIE.encode() + b"=csrf-of-the-test")]
ADMIN_HEADERS = [(b"authorization", b"Bearer " + ADMIN_TOKEN.encode())]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, secrets_in_use: tuple[str, str]
) -> Iterator[ReceiverProcess]:
    """One server on SQLite: no rule here depends on the database."""
    workdir: Path = tmp_path_factory.mktemp("bodies")
    env = {
        "RECEIVER_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'receiver.db'}",
        "RECEIVER_SIGNING_SECRETS": secrets_in_use[0],
        "RECEIVER_ADMIN_TOKEN": ADMIN_TOKEN,
        "RECEIVER_REQUEST_TIMEOUT_SECONDS": str(DEADLINE_SECONDS),
    }
    process = ReceiverProcess(workdir, env).start()
    yield process
    process.stop()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def head(path: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [b"POST " + path + b" HTTP/1.1", b"host: receiver"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def answer_to(sock: socket.socket) -> int | None:
    """The status the server answered, or None if it closed without one."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def stream(port: int, request_head: bytes, first: bytes, chunked: bool) -> tuple[int | None, int]:
    """Sends `request_head`, then `first` and 64 KiB chunks up to HOSTILE_BYTES, until the
    server stops taking them; (its answer, the bytes it took before that)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_head)
        try:
            while sent < HOSTILE_BYTES:
                chunk = first if sent == 0 else CHUNK
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        return answer_to(sock), sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("content_type", "first", "refused_with"),
    [
        (b"application/x-www-form-urlencoded", CHUNK, {413}),
        # Its declared size is refused first, if it has one; else its type.
        (b"multipart/form-data; boundary=" + BOUNDARY, MULTIPART_HEAD, {413, 415}),
    ],
    ids=["urlencoded", "multipart"],
)
def test_a_64_mib_sign_in_body_is_refused_unread_and_memory_stays_flat(
    server: ReceiverProcess,
    content_type: bytes,
    first: bytes,
    refused_with: set[int],
    chunked: bool,
) -> None:
    assert HTTP.get(f"{server.url}/console/login").status_code == 200
    before = rss_bytes(server.pid)
    length = (
        (b"transfer-encoding", b"chunked")
        if chunked
        else (b"content-length", b"%d" % HOSTILE_BYTES)
    )
    request_head = head(
        b"/console/login", [*SIGN_IN_HEADERS, (b"content-type", content_type), length]
    )
    status, sent = stream(server.port, request_head, first, chunked)
    assert status in {*refused_with, None}
    assert sent < HOSTILE_BYTES, "the server went on taking the body"
    grown = rss_bytes(server.pid) - before
    assert grown < RSS_SLACK_BYTES, f"the server grew by {grown / 2**20:.1f} MiB"
    assert HTTP.get(f"{server.url}/healthz").status_code == 200


def test_sign_in_without_its_csrf_cookie_is_refused_before_its_body_is_read(
    server: ReceiverProcess,
) -> None:
    request_head = head(
        b"/console/login",
        [
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"transfer-encoding", b"chunked"),
        ],
    )
    status, sent = stream(server.port, request_head, CHUNK, chunked=True)
    assert status in (403, None)
    assert sent < HOSTILE_BYTES


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_admin_json_over_64_kib_is_413_and_changes_nothing(
    server: ReceiverProcess, declared: bool
) -> None:
    task_id = "task_" + "x" * DOCUMENTED_CAP_BYTES
    body = b'{"task_id": "' + task_id.encode() + b'"}'
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"}
    content: bytes | Iterator[bytes] = body if declared else iter([body[:1000], body[1000:]])
    response = HTTP.post(f"{server.url}/admin/tasks", content=content, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert response.headers["connection"] == "close"
    listed = HTTP.get(f"{server.url}/admin/records", headers=headers).json()
    assert task_id not in [r["task_id"] for r in listed["records"]], "nothing was registered"
    small = HTTP.post(f"{server.url}/admin/tasks", json={"task_id": "task_small"}, headers=headers)
    assert small.status_code < 300, "a body under the cap is taken"


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_sign_in_form_just_past_64_kib_is_413_and_one_under_it_is_read(
    server: ReceiverProcess, declared: bool
) -> None:
    """The sign-in form's cap is the documented one: a byte past it is refused, a body
    just under it is read (and answered as the wrong token it holds)."""
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "cookie": f"{SIGN_IN_COOKIE}=csrf-of-the-test",
    }

    def post(size: int) -> int:
        body = b"csrf=csrf-of-the-test&token=" + b"a" * (size - 28)
        content: bytes | Iterator[bytes] = body if declared else iter([body[:1000], body[1000:]])
        response = HTTP.post(f"{server.url}/console/login", content=content, headers=headers)
        return response.status_code

    assert post(DOCUMENTED_CAP_BYTES + 1) == 413
    assert post(DOCUMENTED_CAP_BYTES) in (401, 429), "a form under the cap is read"


def test_a_form_with_too_many_fields_is_refused(server: ReceiverProcess) -> None:
    fields = "&".join(f"f{n}=x" for n in range(MAX_FORM_FIELDS + 1))
    response = HTTP.post(
        f"{server.url}/console/login",
        content=fields.encode(),
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "cookie": f"{SIGN_IN_COOKIE}=csrf-of-the-test",
        },
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("path", "headers", "content_type"),
    [
        (b"/console/login", SIGN_IN_HEADERS, b"application/x-www-form-urlencoded"),
        (b"/admin/replay", ADMIN_HEADERS, b"application/json"),
    ],
    ids=["sign-in", "admin"],
)
def test_a_body_dripping_in_is_cut_at_the_request_deadline(
    server: ReceiverProcess, path: bytes, headers: list[tuple[bytes, bytes]], content_type: bytes
) -> None:
    request_head = head(
        path, [*headers, (b"content-type", content_type), (b"content-length", b"100")]
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_head)
        started = time.monotonic()
        try:
            while not select.select([sock], [], [], 1.0)[0]:
                sock.sendall(b"a")  # a byte a second, until the server answers or closes
        except (BrokenPipeError, ConnectionResetError):
            pass
        status = answer_to(sock)
        took = time.monotonic() - started
    assert status in (408, None)
    assert DEADLINE_SECONDS * 0.9 <= took <= DEADLINE_SECONDS + 5, f"cut after {took:.1f} s"
