"""Ingest with tracing on: a stand-in OTLP/HTTP collector on loopback, and the traced runs.

The traced servers keep the SDK's default batching (OTEL_BSP_*: a batch of 512 spans, or
every 5 s, from a queue of 2048), so the cost measured is the one operators get.
"""

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

from bench.runs import Ingest, run_receiver
from receiver.signatures import WebhookSecret

TRACES_PATH = "/v1/traces"


@dataclass(frozen=True)
class Setup:
    label: str  # the run's name in the report
    variables: dict[str, str]  # its OTEL_* variables, beside the endpoint of its sink


TRACINGS = {
    "always_on": Setup(
        "tracing always_on (OTLP/HTTP to a local sink)", {"OTEL_TRACES_SAMPLER": "always_on"}
    ),
    "ratio": Setup(
        "tracing parentbased_traceidratio 0.01",
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"},
    ),
    # Off as with no endpoint at all (the same path, no tracer): beside the run with no
    # endpoint, it shows how far two runs of one code path differ in this run.
    "disabled": Setup("OTEL_SDK_DISABLED=true, endpoint set", {"OTEL_SDK_DISABLED": "true"}),
}


class TraceSink:
    """Answers 200 to every POST /v1/traces and counts the exports and their bytes; it does
    not decode them, so it costs the machine as little as a collector can. The tests' OTLP
    endpoints are this sink with a `take` of their own (that decodes, records, refuses or
    hangs)."""

    def __init__(self) -> None:
        self.exports = 0
        self.bytes = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            # The exporter keeps its connection open between batches.
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status = sink.take(self, body)
                if status is None:
                    return
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def take(self, request: BaseHTTPRequestHandler, body: bytes) -> int | None:
        """The status to answer a POST `request` with (None: no answer at all)."""
        if request.path != TRACES_PATH:
            return 404
        with self._lock:
            self.exports += 1
            self.bytes += len(body)
        return 200

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "TraceSink":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class Traced:
    ingest: Ingest
    exports: int
    exported_bytes: int


def run_traced(workdir: Path, secret: WebhookSecret, feed: Path, tracing: str) -> Traced:
    """`receiver serve` as `run_receiver` measures it, exporting to a sink of its own; the
    sink's counts include what the server flushed as it stopped."""
    with TraceSink() as sink:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, **TRACINGS[tracing].variables}
        ingest = run_receiver(workdir, secret, feed, otel)
        return Traced(ingest, sink.exports, sink.bytes)
