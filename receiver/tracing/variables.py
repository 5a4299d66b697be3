"""The OTEL_* variables this service decides with, read and checked.

They are read from the process's environment (not `.env`), as the SDK itself reads the ones
it honours directly (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
`OTEL_EXPORTER_OTLP_TIMEOUT`, ...). A value the SDK would take with a traceback, or
silently replace with a default (an unknown sampler, a ratio that is not a number, a queue
smaller than a batch), stops start-up with one line naming the variable, never its value.
"""

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)

from receiver.exceptions import SettingsError

DEFAULT_SERVICE_NAME = "rivya-receiver"
DEFAULT_SAMPLER = "parentbased_always_on"
# The SDK's own defaults, read here as well because the drop count needs the queue's bound
# and the SDK refuses, with a traceback, a batch larger than the queue or a delay of 0.
DEFAULT_MAX_QUEUE_SIZE = 2048
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512
DEFAULT_SCHEDULE_DELAY_MILLIS = 5000
# Upper bounds, where the SDK fails past some value: a queue longer than a C ssize_t stops
# start-up with a traceback, a delay past time_t kills the export thread (every span then
# dropped). 65,536 spans are about 200 MiB at the 3 KB a span measured; a delay of an hour
# already leaves a trace unreadable for that long.
MOST_SPANS = 65_536
MOST_DELAY_MILLIS = 3_600_000
FIXED_SAMPLERS: dict[str, Sampler] = {
    "always_on": ALWAYS_ON,
    "always_off": ALWAYS_OFF,
    "parentbased_always_on": DEFAULT_ON,
    "parentbased_always_off": DEFAULT_OFF,
}
RATIO_SAMPLERS: dict[str, Callable[[float], Sampler]] = {
    "traceidratio": TraceIdRatioBased,
    "parentbased_traceidratio": ParentBasedTraceIdRatio,
}
TRACES_PATH = "v1/traces"
INSTALLED_PROPAGATORS = frozenset({"tracecontext", "baggage", "none"})
# A span's attribute values are cut to this many characters: a path or a user agent is the
# caller's to make as long as the header limit allows (64 KiB), and 2,048 queued spans of
# that would hold hundreds of MiB (measured: +237 MiB; +16 MiB at 1,024). IDs, routes and
# addresses fit well inside it.
MAX_ATTRIBUTE_CHARS = 1024
# A group-commit batch links every request it acknowledged: up to the writer's largest
# batch (receiver.store.writer), over the SDK's default of 128 links a span.
MAX_LINKS = 256
# The SDK's span limits, each a count or a length: checked here, where the SDK would stop
# start-up with a traceback naming nothing.
LIMIT_VARIABLES = (
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
)
MOST_LIMIT = 1_000_000
# An export that takes longer has failed; past five minutes a collector is not answering.
DEFAULT_TIMEOUT_SECONDS = 10.0
MOST_TIMEOUT_SECONDS = 300.0
COMPRESSIONS = {
    "none": Compression.NoCompression,
    "gzip": Compression.Gzip,
    "deflate": Compression.Deflate,
}
# RFC 9110's token, a header's name.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
HOSTNAME = re.compile(r"[0-9A-Za-z.-]+|\[[0-9A-Fa-f:.]+\]")
# Digits enough for any bound here; int() of thousands of digits is refused (and slow).
MOST_DIGITS = 10


@dataclass(frozen=True, slots=True)
class Variables:
    """What the variables ask of the pipeline."""

    endpoint: str
    sampler: Sampler
    resource: Resource
    max_queue_size: int
    max_export_batch_size: int
    schedule_delay_millis: int
    span_limits: SpanLimits
    headers: dict[str, str]
    timeout_seconds: float
    compression: Compression


def read_variables(environ: Mapping[str, str]) -> Variables | None:
    """The pipeline `environ` asks for, or None when it names no OTLP endpoint."""
    endpoint = traces_endpoint(environ)
    if endpoint is None:
        return None
    _check_protocol(environ)
    _check_propagators(environ)
    _check_files(environ)
    _positive_int(environ, "OTEL_BSP_EXPORT_TIMEOUT", 1, MOST_DELAY_MILLIS)
    return Variables(
        endpoint=endpoint,
        sampler=read_sampler(environ),
        resource=_resource(environ),
        max_queue_size=_positive_int(
            environ, "OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE, MOST_SPANS
        ),
        max_export_batch_size=_positive_int(
            environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_EXPORT_BATCH_SIZE, MOST_SPANS
        ),
        schedule_delay_millis=_positive_int(
            environ, "OTEL_BSP_SCHEDULE_DELAY", DEFAULT_SCHEDULE_DELAY_MILLIS, MOST_DELAY_MILLIS
        ),
        span_limits=_span_limits(environ),
        headers=_headers(environ),
        timeout_seconds=_timeout(environ),
        compression=_compression(environ),
    )


def _span_limits(environ: Mapping[str, str]) -> SpanLimits:
    for name in LIMIT_VARIABLES:
        _positive_int(environ, name, 1, MOST_LIMIT)
    # The SDK reads whichever variables are set; ours stand where they are not.
    length = any(environ.get(name) for name in LIMIT_VARIABLES[:2])
    return SpanLimits(
        max_attributes=None,
        max_attribute_length=None if length else MAX_ATTRIBUTE_CHARS,
        max_links=None if environ.get("OTEL_SPAN_LINK_COUNT_LIMIT") else MAX_LINKS,
    )


def _first(environ: Mapping[str, str], suffix: str) -> tuple[str, str]:
    """The traces variable of `suffix` if set, else the general one: its name and value."""
    for name in (f"OTEL_EXPORTER_OTLP_TRACES_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}"):
        if value := environ.get(name, "").strip():
            return name, value
    return "", ""


def _headers(environ: Mapping[str, str]) -> dict[str, str]:
    """The collector's headers (its authentication: secrets), read here rather than by the
    exporter, which logs a value it cannot read, and at each export one it cannot send."""
    name, value = _first(environ, "HEADERS")
    headers: dict[str, str] = {}
    for pair in filter(None, (part.strip() for part in value.split(","))):
        key, equals, text = pair.partition("=")
        text = unquote(text.strip())
        if not (equals and HEADER_NAME.fullmatch(key.strip()) and _sendable(text)):
            raise SettingsError(f"{name}: give name=value pairs, values URL-encoded")
        headers[key.strip().lower()] = text
    return headers


def _sendable(value: str) -> bool:
    return (
        value == value.lstrip()
        and value.isprintable()
        and all(ord(character) < 256 for character in value)
    )


def _timeout(environ: Mapping[str, str]) -> float:
    name, value = _first(environ, "TIMEOUT")
    if not value:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MOST_TIMEOUT_SECONDS:  # NaN fails this too
        raise SettingsError(f"{name}: give seconds from 0 to {MOST_TIMEOUT_SECONDS:g}")
    return seconds


def _compression(environ: Mapping[str, str]) -> Compression:
    name, value = _first(environ, "COMPRESSION")
    if not value:
        return Compression.NoCompression
    if value.lower() not in COMPRESSIONS:
        raise SettingsError(f"{name}: use none, gzip or deflate")
    return COMPRESSIONS[value.lower()]


def _check_files(environ: Mapping[str, str]) -> None:
    for suffix in ("CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE"):
        name, path = _first(environ, suffix)
        if path and not os.access(path, os.R_OK):
            raise SettingsError(f"{name}: no readable file there")


def traces_endpoint(environ: Mapping[str, str]) -> str | None:
    """Where spans go: the traces endpoint as given, or `v1/traces` under the general one."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if endpoint := environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        _check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
        return endpoint
    if endpoint := environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        _check_url("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        return endpoint.rstrip("/") + "/" + TRACES_PATH
    return None


def read_sampler(environ: Mapping[str, str]) -> Sampler:
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or DEFAULT_SAMPLER
    if name in FIXED_SAMPLERS:
        return FIXED_SAMPLERS[name]
    if name not in RATIO_SAMPLERS:
        known = ", ".join([*FIXED_SAMPLERS, *RATIO_SAMPLERS])
        raise SettingsError(f"OTEL_TRACES_SAMPLER: use one of {known}")
    argument = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip() or "1.0"
    try:
        ratio = float(argument)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:  # NaN fails this too
        raise SettingsError("OTEL_TRACES_SAMPLER_ARG: give a ratio from 0 to 1, such as 0.01")
    return RATIO_SAMPLERS[name](ratio)


def _resource(environ: Mapping[str, str]) -> Resource:
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME itself, and names
    # a service it was not told of "unknown_service": ours has a name of its own.
    pairs = [
        pair.partition("=")
        for pair in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
        if pair.strip()
    ]
    if not all(equals and key.strip() for key, equals, _ in pairs):
        raise SettingsError("OTEL_RESOURCE_ATTRIBUTES: give key=value pairs, comma-separated")
    resource = Resource.create()
    named = any(key.strip() == SERVICE_NAME for key, _, _ in pairs)
    if environ.get("OTEL_SERVICE_NAME", "").strip() or named:
        return resource
    return resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))


def _check_protocol(environ: Mapping[str, str]) -> None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if (protocol := environ.get(name, "").strip()) and protocol != "http/protobuf":
            raise SettingsError(f"{name}: only http/protobuf is supported")


def _check_propagators(environ: Mapping[str, str]) -> None:
    # The SDK's global propagators, which the instrumentations use, load these by name and
    # fail at import for any other (no B3 or Jaeger package is installed).
    names = {name.strip() for name in environ.get("OTEL_PROPAGATORS", "").split(",")} - {""}
    if names - INSTALLED_PROPAGATORS:
        raise SettingsError("OTEL_PROPAGATORS: use tracecontext, baggage or none")


def _check_url(name: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        # The port is read to be checked: one out of range or not a number raises here, not
        # at each export (which would drop every span).
        usable = (
            parts.scheme in ("http", "https")
            and HOSTNAME.fullmatch(_host(parts.netloc)) is not None
            and parts.port != 0
            and url.isprintable()
            and not parts.query
        )
    except ValueError:  # an unclosed IPv6 bracket, a port that is not one
        usable = False
    if not usable:
        raise SettingsError(f"{name}: give an http:// or https:// URL, without a query")


def _host(netloc: str) -> str:
    host = netloc.rpartition("@")[2]
    return host if host.endswith("]") else host.rsplit(":", 1)[0]


def _positive_int(environ: Mapping[str, str], name: str, default: int, most: int) -> int:
    value = environ.get(name, "").strip()
    if not value:
        return default
    # isdigit alone takes "²", which int() refuses.
    digits = value.isascii() and value.isdigit() and len(value) <= MOST_DIGITS
    if not digits or not 0 < int(value) <= most:
        raise SettingsError(f"{name}: give a whole number from 1 to {most}")
    return int(value)
