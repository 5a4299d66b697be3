"""Fuzzing: Hypothesis drives the whole HTTP handler in-process; atheris (coverage-guided)
drives the verifier and the event parser for a fixed time."""

import asyncio
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.app import create_app
from receiver.logs import configure_logging
from receiver.settings import Settings
from receiver.signatures import WebhookSecret, sign_headers
from tests.conftest import SECRETS_OF_THE_RUN, Sensitive
from tests.helpers import make_event
from tests.reliability.conftest import Figures

FUZZ_SECONDS = 20
# Each target's floor: about a twentieth of the runs 20 s gave on the 2 cores the suite is
# timed on (790,000 and 5.7 million; 220,000 and 830,000 with six other suites running
# beside), so that a busy machine passes and a target that stops early or slows down on
# every input (a setup error, an accidental quadratic path) fails.
MIN_FUZZ_RUNS = {"verifier": 40_000, "envelope": 250_000}
HANDLER_EXAMPLES = 400


class InProcess:
    """The app, its lifespan entered, on one event loop that outlives the examples."""

    def __init__(self, settings: Settings) -> None:
        self.runner = asyncio.Runner()
        self.app = create_app(settings, run_forwarder=False)
        self.lifespan = self.app.router.lifespan_context(self.app)
        self.runner.run(self.lifespan.__aenter__())
        transport = httpx.ASGITransport(app=self.app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://receiver")

    def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        # As a server sees them: header values are bytes, read as latin-1.
        raw = {name.encode(): value.encode("latin-1") for name, value in headers.items()}
        return self.runner.run(self.client.post("/webhooks/rivya", content=body, headers=raw))

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.run(self.lifespan.__aexit__(None, None, None))
        self.runner.close()


@pytest.fixture(scope="module")
def in_process(
    tmp_path_factory: pytest.TempPathFactory, sensitive: Sensitive
) -> Iterator[tuple[InProcess, Path]]:
    folder = tmp_path_factory.mktemp("fuzz")
    database = folder / "fuzz.db"
    sensitive.add(SECRET.reveal(), SECRET.reveal().removeprefix("whsec_"))
    SECRETS_OF_THE_RUN.add(SECRET.reveal(), SECRET.reveal().removeprefix("whsec_"))
    settings = Settings.from_environment(
        {
            "RECEIVER_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "RECEIVER_SIGNING_SECRETS": SECRET.reveal(),
            "RECEIVER_MAX_BODY_BYTES": "4096",
        },
        env_file=None,
    )
    with (folder / "in-process.log").open("w") as log:
        configure_logging("info", "json", stream=log)
        app = InProcess(settings)
        yield app, database
        app.close()
        structlog.reset_defaults()
    assert sensitive.found_in((folder / "in-process.log").read_text()) == []


SECRET = WebhookSecret.generate()
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Raw bytes, any JSON, or a Rivya event with some fields swapped for any JSON."""
    kind = draw(st.sampled_from(["bytes", "json", "event"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return orjson.dumps(draw(JSON), option=orjson.OPT_NON_STR_KEYS)
    event: dict[str, Any] = make_event(
        draw(st.sampled_from(["generation.succeeded", "generation.failed"]))
    )
    for field in draw(st.lists(st.sampled_from(list(event["data"])), max_size=3)):
        event["data"][field] = draw(JSON)
    if draw(st.booleans()):
        event[draw(st.sampled_from(list(event)))] = draw(JSON)
    return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS)


@settings(
    max_examples=HANDLER_EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=bodies(),
    msg_id=st.one_of(st.from_regex(r"\Amsg_[a-z0-9]{1,20}\Z"), HEADER_TEXT),
    sign=st.booleans(),
    content_type=st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain", ""]
    ),
    extra=st.dictionaries(
        st.sampled_from(["webhook-signature", "webhook-timestamp", "webhook-id", "x-other"]),
        HEADER_TEXT,
        max_size=2,
    ),
)
def test_handler_answers_anything_without_a_server_error(
    in_process: tuple[InProcess, Path],
    figures: Figures,
    sensitive: Sensitive,
    body: bytes,
    msg_id: str,
    sign: bool,
    content_type: str,
    extra: dict[str, str],
) -> None:
    app, database = in_process
    headers = {"content-type": content_type, **extra}
    if sign:
        headers = {**headers, **sign_headers([SECRET], msg_id, body)}
        sensitive.add(headers["webhook-signature"])
    response = app.post(body, headers)
    figures.add("Hypothesis, HTTP handler in-process", examples=1)

    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert sign, "accepted without our signature"
        event_id = response.json()["event_id"]
        with sqlite3.connect(database) as connection:
            assert connection.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone()
    else:
        assert 400 <= response.status_code < 500
        assert response.json()["error"]


def test_coverage_guided_fuzzing_finds_no_crash(tmp_path: Path, figures: Figures) -> None:
    """Both targets at once, one a core: the same time each, half the suite's wait."""
    for target in MIN_FUZZ_RUNS:  # a corpus each: libFuzzer adds what it finds to it
        (tmp_path / target).mkdir()
        for event_type in ("generation.succeeded", "generation.failed"):
            (tmp_path / target / event_type).write_bytes(orjson.dumps(make_event(event_type)))
    runs = {
        target: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.fuzz_targets",
                target,
                f"-max_total_time={FUZZ_SECONDS}",
                "-rss_limit_mb=2048",
                str(tmp_path / target),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for target in MIN_FUZZ_RUNS
    }
    for target, run in runs.items():
        _, stderr = run.communicate(timeout=FUZZ_SECONDS + 60)
        assert run.returncode == 0, stderr[-4000:]
        done = re.search(r"Done (\d+) runs", stderr)
        assert done, stderr[-2000:]
        runs_done = int(done.group(1))
        figures.add(f"atheris, {target}", runs=runs_done, seconds=FUZZ_SECONDS, crashes=0)
        assert runs_done >= MIN_FUZZ_RUNS[target], f"{target}: only {runs_done} runs"
