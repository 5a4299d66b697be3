"""The OTEL_* variables this service decides with, read and checked.

They are read from the process's environment (not `.env`), as the SDK itself reads the ones
it honours directly (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
`OTEL_EXPORTER_OTLP_TIMEOUT`, ...). A value the SDK would take with a traceback, or
silently replace with a default (an unknown sampler, a ratio that is not a number, a queue
smaller than a batch), stops start-up with one line naming the variable, never its value.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
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


@dataclass(frozen=True, slots=True)
class Variables:
    """What the variables ask of the pipeline."""

    endpoint: str
    sampler: Sampler
    resource: Resource
    max_queue_size: int
    max_export_batch_size: int
    schedule_delay_millis: int


def read_variables(environ: Mapping[str, str]) -> Variables | None:
    """The pipeline `environ` asks for, or None when it names no OTLP endpoint."""
    endpoint = traces_endpoint(environ)
    if endpoint is None:
        return None
    _check_protocol(environ)
    _check_propagators(environ)
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
    )


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
    resource = Resource.create()
    if environ.get("OTEL_SERVICE_NAME") or "service.name" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
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
            and bool(parts.hostname)
            and parts.port != 0
            and url.isprintable()
        )
    except ValueError:  # an unclosed IPv6 bracket, a port that is not one
        usable = False
    if not usable:
        raise SettingsError(f"{name}: give an http:// or https:// URL")


def _positive_int(environ: Mapping[str, str], name: str, default: int, most: int) -> int:
    value = environ.get(name, "").strip()
    if not value:
        return default
    # isdigit alone takes "²", which int() refuses.
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) <= most:
        raise SettingsError(f"{name}: give a whole number from 1 to {most}")
    return int(value)
