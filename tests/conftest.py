import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from hypothesis import settings as hypothesis_settings

from tests.databases import BACKENDS, PostgresServer, reading
from tests.helpers import (
    ANSWER_200,
    HTTP,
    LEFT_RUNNING,
    Downstream,
    ReceiverProcess,
    Respond,
    new_secret,
    signed,
)

# Shared machines are slow and noisy; a property's worth is in its examples, not its speed.
hypothesis_settings.register_profile("default", deadline=None)
hypothesis_settings.load_profile("default")

ADMIN_TOKEN = "admin-token-for-tests-0123456789"  # noqa: S105 - a test fixture's token


class Sensitive:
    """Values that must never reach a log line: every test that makes one registers it."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, *values: str) -> None:
        self.values.update(value for value in values if value)

    def found_in(self, text: str) -> list[str]:
        return sorted(value for value in self.values if value in text)


# Every module's secrets and tokens, for the scan of the whole run's logs at its end.
SECRETS_OF_THE_RUN = Sensitive()


@pytest.fixture(scope="session", autouse=True)
def no_service_left_running() -> Iterator[None]:
    """After the last test: stop every service a failed test left running."""
    yield
    for server in list(LEFT_RUNNING):
        server.stop(signal.SIGKILL)


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the last test: no log file any test wrote holds any module's secret or token.
    (Each server's own log is also scanned for its module's signatures, bodies and URLs.)"""
    yield
    logs = sorted(tmp_path_factory.getbasetemp().rglob("*.log"))
    leaks = {
        log.name: found
        for log in logs
        if (found := SECRETS_OF_THE_RUN.found_in(log.read_text(errors="replace")))
    }
    assert leaks == {}, "a secret reached a log"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def sensitive() -> Sensitive:
    return Sensitive()


@pytest.fixture(scope="module")
def secrets_in_use(sensitive: Sensitive) -> tuple[str, str]:
    """The current and the previous signing secret, as during a rotation."""
    current, previous = new_secret(), new_secret()
    for registry in (sensitive, SECRETS_OF_THE_RUN):
        registry.add(current, previous, ADMIN_TOKEN)
        registry.add(current.removeprefix("whsec_"), previous.removeprefix("whsec_"))
    return current, previous


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("receiver")


@pytest.fixture(scope="module")
def downstream() -> Iterator[Downstream]:
    """The module's downstream: a real HTTP server that answers 200 unless a test says else."""
    server = Downstream()
    yield server
    server.stop()


@pytest.fixture
def own_downstream() -> Iterator[Callable[..., Downstream]]:
    """Downstreams of the test's own, answering as the test says."""
    started: list[Downstream] = []

    def start(respond: Respond = ANSWER_200, delay: float = 0.0) -> Downstream:
        started.append(Downstream(respond, delay))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def forward_secret(sensitive: Sensitive) -> str:
    secret = new_secret()
    for registry in (sensitive, SECRETS_OF_THE_RUN):
        registry.add(secret, secret.removeprefix("whsec_"))
    return secret


@pytest.fixture
def new_secrets(sensitive: Sensitive) -> Callable[[], str]:
    """Fresh signing secrets, each registered as never to be logged."""

    def new() -> str:
        secret = new_secret()
        for registry in (sensitive, SECRETS_OF_THE_RUN):
            registry.add(secret, secret.removeprefix("whsec_"))
        return secret

    return new


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that touches a database runs on each backend, unless it is marked as
    being about one backend itself, or about what no database takes part in."""
    if "backend" in metafunc.fixturenames:
        backends = list(BACKENDS)
        for only in ("sqlite", "postgresql"):
            if metafunc.definition.get_closest_marker(f"{only}_only") is not None:
                backends = [only]
        if metafunc.definition.get_closest_marker("any_backend") is not None:
            backends = ["sqlite"]
        metafunc.parametrize("backend", backends, indirect=True, scope="module")


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def new_database(backend: str, request: pytest.FixtureRequest) -> Callable[[Path], str]:
    """A fresh database on the module's backend: a SQLite file in `folder`, or a new
    database on the suite's PostgreSQL server."""

    def new(folder: Path) -> str:
        if backend == "sqlite":
            return f"sqlite+aiosqlite:///{folder / 'receiver.db'}"
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.new_database()

    return new


@pytest.fixture(scope="module")
def server_env(
    workdir: Path,
    secrets_in_use: tuple[str, str],
    downstream: Downstream,
    forward_secret: str,
    new_database: Callable[[Path], str],
) -> dict[str, str]:
    return {
        "RECEIVER_DATABASE_URL": new_database(workdir),
        "RECEIVER_SIGNING_SECRETS": " , ".join(secrets_in_use),
        "RECEIVER_ADMIN_TOKEN": ADMIN_TOKEN,
        "RECEIVER_MAX_BODY_BYTES": "65536",
        "RECEIVER_FORWARD_URL": downstream.url,
        "RECEIVER_FORWARD_SIGNING_SECRETS": forward_secret,
        "RECEIVER_FORWARD_RETRY_SCHEDULE": "0.2,0.4",
        "RECEIVER_FORWARD_TIMEOUT_SECONDS": "2",
        "RECEIVER_FORWARD_LEASE_SECONDS": "3",
    }


@pytest.fixture(scope="module")
def server(
    workdir: Path, server_env: dict[str, str], sensitive: Sensitive
) -> Iterator[ReceiverProcess]:
    """One real server per test module; at the end, its whole output is scanned for leaks."""
    process = ReceiverProcess(workdir, server_env).start()
    yield process
    process.stop()
    output = process.output()
    assert '"event":"request"' in output, "the server wrote no request log lines"
    assert sensitive.found_in(output) == [], "a sensitive value reached the logs"


@pytest.fixture
def start_server(
    tmp_path: Path,
    server_env: dict[str, str],
    sensitive: Sensitive,
    new_database: Callable[[Path], str],
) -> Iterator[Callable[..., ReceiverProcess]]:
    """Servers of the test's own (`receiver serve`, or the command given), on a fresh
    database (one per test), with settings overridden by keyword (an empty value unsets;
    OTEL_* names are passed as they are)."""
    started: list[ReceiverProcess] = []
    database_url = new_database(tmp_path)

    def start(*args: str, **overrides: str) -> ReceiverProcess:
        env = {**server_env, "RECEIVER_DATABASE_URL": database_url}
        env |= {
            name if name.startswith("OTEL_") else f"RECEIVER_{name.upper()}": value
            for name, value in overrides.items()
        }
        started.append(ReceiverProcess(tmp_path, env, args or ("serve",)).start())
        return started[-1]

    yield start
    for process in started:
        if process.running:
            process.stop()
        assert sensitive.found_in(process.output()) == [], "a sensitive value reached the logs"


@pytest.fixture
def db(server_env: dict[str, str]) -> Iterator[sa.Connection]:
    """The module server's real database, read beside it."""
    with reading(server_env["RECEIVER_DATABASE_URL"]) as connection:
        yield connection


class Rivya:
    """Delivers to the server as Rivya does, registering every sensitive value it sends."""

    def __init__(self, server: ReceiverProcess, secret: str, sensitive: Sensitive) -> None:
        self.server = server
        self.secret = secret
        self.sensitive = sensitive

    def send(self, event: dict[str, Any]) -> httpx.Response:
        return self.post(*signed(self.secret, event))

    def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        self.sensitive.add(headers.get("webhook-signature", ""), body.decode(errors="ignore"))
        self.sensitive.add(*_sensitive_fields(body))
        return HTTP.post(f"{self.server.url}/webhooks/rivya", content=body, headers=headers)

    def admin(self, path: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        return HTTP.request(method, f"{self.server.url}/admin{path}", headers=headers, **kwargs)


@pytest.fixture(scope="module")
def rivya(server: ReceiverProcess, secrets_in_use: tuple[str, str], sensitive: Sensitive) -> Rivya:
    return Rivya(server, secrets_in_use[0], sensitive)


def _sensitive_fields(body: bytes) -> list[str]:
    try:
        data = orjson.loads(body)["data"]
        result, error = data.get("result") or {}, data.get("error") or {}
        return [*result.get("urls", []), result.get("primary_url", ""), error.get("message", "")]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return []
