"""The log chain: allow-listed fields only, exceptions reduced to class and place, and one
line per request with what the handler bound."""

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from receiver.logs import configure_logging, log


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    yield stream
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_fields_not_on_the_allow_list_are_dropped(json_logs: io.StringIO) -> None:
    log.info("request", event_id="evt_1", http_status=200, body="raw", signature="v1,abc")
    (line,) = lines(json_logs)
    assert line["event_id"] == "evt_1"
    assert line["http_status"] == 200
    assert "body" not in line
    assert "signature" not in line
    assert set(line) <= {"event", "event_id", "http_status", "level", "timestamp"}


def test_bound_context_passes_the_same_filter(json_logs: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(task_id="task_1", result_url="https://x/y?sig=1")
    try:
        log.info("request")
    finally:
        structlog.contextvars.clear_contextvars()
    (line,) = lines(json_logs)
    assert line["task_id"] == "task_1"
    assert "result_url" not in line


def test_exceptions_become_class_and_place_never_message(
    json_logs: io.StringIO,
) -> None:
    try:
        int("parameters: whsec_c2VjcmV0")
    except ValueError:
        log.exception("store_failed")
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    ours, uvicorns = lines(json_logs)
    for line in (ours, uvicorns):
        assert line["error_class"] == "ValueError"
        assert str(line["error_at"]).startswith("test_logs.py:")
        assert "whsec_" not in json.dumps(line)
    assert uvicorns["logger"] == "uvicorn.error"


def test_library_debug_lines_are_silenced(json_logs: io.StringIO) -> None:
    logging.getLogger("aiosqlite").warning("kept")
    logging.getLogger("aiosqlite").info("executing with parameters")
    assert [line["event"] for line in lines(json_logs)] == ["kept"]


def test_opentelemetrys_lines_keep_logger_level_and_class_never_their_text(
    json_logs: io.StringIO,
) -> None:
    """OpenTelemetry's exporter quotes a collector's answer, its headers, a caller's
    tracestate: its lines say which logger, at what level, and the exception's class."""
    exporter = logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    exporter.error("Failed to export span batch code: %s, reason: %s", 400, "token-in-answer")
    logging.getLogger("opentelemetry.trace").warning("Invalid key/value pair (%s)", "k=token")
    try:
        int("token-in-exception")
    except ValueError:
        exporter.exception("Exception while exporting token-in-message")
    error, warning, failed = lines(json_logs)
    assert (error["event"], error["level"]) == ("opentelemetry_error", "error")
    assert error["logger"] == exporter.name
    assert (warning["event"], warning["logger"]) == ("opentelemetry_warning", "opentelemetry.trace")
    assert (failed["event"], failed["error_class"]) == ("opentelemetry_error", "ValueError")
    assert "token" not in json_logs.getvalue()


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a person's shell is."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


def log_one_line(log_format: str, stream: io.StringIO) -> str:
    configure_logging("info", log_format, stream)
    log.info("request", event_id="evt_1", signature="v1,abc")
    logging.getLogger("uvicorn.error").info("Started server process")
    return stream.getvalue()


def is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


@pytest.mark.usefixtures("restore_logging")
def test_auto_renders_for_people_on_a_terminal_through_the_same_allow_list() -> None:
    output = log_one_line("auto", Terminal())
    ours, uvicorns = output.splitlines()
    assert not is_json(ours)
    assert "request" in ours
    assert "evt_1" in ours
    assert "Started server process" in uvicorns
    assert "signature" not in output
    assert "v1,abc" not in output


@pytest.mark.usefixtures("restore_logging")
def test_auto_writes_json_when_the_stream_is_not_a_terminal() -> None:
    ours, uvicorns = [json.loads(line) for line in log_one_line("auto", io.StringIO()).splitlines()]
    assert (ours["event"], ours["event_id"]) == ("request", "evt_1")
    assert "signature" not in ours
    assert uvicorns["logger"] == "uvicorn.error"


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("log_format", "stream", "json_expected"),
    [("json", Terminal(), True), ("console", io.StringIO(), False)],
    ids=["json-on-a-terminal", "console-into-a-pipe"],
)
def test_an_explicit_format_wins_over_the_terminal_check(
    log_format: str, stream: io.StringIO, json_expected: bool
) -> None:
    first_line = log_one_line(log_format, stream).splitlines()[0]
    assert is_json(first_line) is json_expected
