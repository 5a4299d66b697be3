"""Structured logs: one line per request or delivery attempt, allow-listed fields only.

Every record, ours or a library's (uvicorn, SQLAlchemy, Alembic), passes the same
processors. A field the allow-list does not name is dropped, so a secret, signature,
raw body, result URL or payload error message cannot reach the output by accident.
Exceptions are reduced to their class and the place they were raised, because their
messages can quote SQL parameters and so the body.
"""

import logging
import sys
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.typing import EventDict, Processor, WrappedLogger

from receiver.tracing.carriers import add_trace_ids

ALLOWED_FIELDS = frozenset(
    {
        "timestamp",
        "level",
        "logger",
        "event",
        "method",
        "path",
        "http_status",
        "duration_ms",
        "event_id",
        "event_type",
        "task_id",
        "outcome",
        "reason",
        "error_class",
        "error_at",
        "host",
        "port",
        "batch_size",
        "count",
        "concurrency",
        "delivery_id",
        "attempt",
        "delivery_state",
        "destination",
        "destinations",
        "failures",
        "changed",
        "added",
        "removed",
        "unchanged",
        "by_destination",
        "not_found",
        "failed",
        "credits",
        "threshold",
        "pause_seconds",
        "who",
        "what",
        "trace_id",
        "span_id",
        "queue_full",
        "export_failed",
    }
)
MAX_PATH_CHARS = 200
# Their debug lines quote SQL parameters and request data, and messages pass the allow-list;
# Apprise says "Sent ... notification." at info for every message (notification_sent says it).
QUIET_LIBRARIES = (
    "aiosqlite",
    "sqlalchemy",
    "aiohttp",
    "asyncio",
    "alembic",
    "apprise",
    "urllib3",
)

log = structlog.get_logger("receiver")


def summarize_exception(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and exc_info[0] is not None:
        event_dict["error_class"] = exc_info[0].__name__
        event_dict["error_at"] = raised_at(exc_info[2])
    return event_dict


def keep_allowed_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return {
        key: value
        for key, value in event_dict.items()
        if key in ALLOWED_FIELDS and value is not None
    }


def renders_for_people(log_format: str, stream: TextIO) -> bool:
    """`auto` reads the stream the lines go to: a terminal has a person watching it, anything
    else (a pipe, a file, a container's log collector) wants one JSON object per line."""
    if log_format == "auto":
        return stream.isatty()
    return log_format == "console"


def configure_logging(
    level: str, log_format: str, stream: TextIO = sys.stdout, trace_ids: bool = False
) -> None:
    """`trace_ids`: tracing is on, so lines written within a span carry its IDs."""
    enrich: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        *([add_trace_ids] if trace_ids else []),
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor = (
        # Colours for a terminal only: forced on a pipe or a file, they are escape codes.
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if renders_for_people(log_format, stream)
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    redact_and_render: list[Processor] = [summarize_exception, keep_allowed_fields, renderer]
    structlog.configure(
        processors=[*enrich, *redact_and_render],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.WriteLoggerFactory(stream),
    )
    # Libraries log through the standard library: route them through the same chain.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *enrich],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *redact_and_render,
            ],
        )
    )
    handler.addFilter(withhold_library_text)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


# Libraries whose log lines quote text from outside: OpenTelemetry's quote a collector's
# answer, an exporter's headers and endpoint, a caller's tracestate; Apprise's quote a
# notification URL (its token) and the answers of the services it sends to; urllib3's (under
# Apprise's requests) quote each request's path, where a Slack or Teams webhook's token is.
QUOTING_LIBRARIES = ("opentelemetry", "apprise", "urllib3")


def withhold_library_text(record: logging.LogRecord) -> bool:
    """A QUOTING_LIBRARIES line keeps its logger, level and exception class, not its text."""
    if record.name.partition(".")[0] in QUOTING_LIBRARIES:
        record.msg = f"{record.name.partition('.')[0]}_{record.levelname.lower()}"
        record.args = ()
    return True


class RequestLogMiddleware:
    """Writes the one line per HTTP request, with whatever the handler bound."""

    def __init__(
        self, app: ASGIApp, on_finished: Callable[[Scope, int, float], None] | None = None
    ) -> None:
        """`on_finished(scope, http_status, seconds)` runs after the line is written, with
        the handler's bindings still in place (the metrics read them)."""
        self.app = app
        self._on_finished = on_finished
        # Bound once, when the app first runs (after configure_logging): the module's lazy
        # proxy would look the configuration up again on every request.
        self._log = log.bind()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        structlog.contextvars.clear_contextvars()
        started = time.perf_counter()
        http_status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal http_status
            if message["type"] == "http.response.start":
                http_status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            seconds = time.perf_counter() - started
            self._log.info(
                "request",
                method=scope["method"],
                path=scope["path"][:MAX_PATH_CHARS],
                http_status=http_status,
                duration_ms=round(seconds * 1000, 2),
            )
            if self._on_finished is not None:
                self._on_finished(scope, http_status, seconds)


def raised_at(tb: TracebackType | None) -> str | None:
    frames = traceback.extract_tb(tb) if tb else []
    return f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else None


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()
