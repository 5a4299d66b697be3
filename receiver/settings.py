"""All configuration, read once at the edge into one typed, immutable `Settings`.

Values come from `RECEIVER_*` environment variables, over an optional `.env` file.
Tests build `Settings(...)` directly. Secrets are held in objects whose repr hides them,
and an unusable value stops start-up with one line naming its variable (never its value).
"""

from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from receiver.destinations import (
    DEFAULT_NAME,
    Destination,
    check_http_url,
    load_destinations,
    parse_secrets,
)
from receiver.exceptions import SettingsError
from receiver.forward.rate import MAX_PER_SECOND, MIN_PER_SECOND
from receiver.operational.apprise_urls import check_notify_urls, split_notify_urls
from receiver.signatures import WebhookSecret

ENV_PREFIX = "RECEIVER_"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/receiver.db"
# The async drivers the service is built and tested on; any other fails at its first query.
DATABASE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
MAX_PORT = 65535
MIN_ADMIN_TOKEN_CHARS = 16
# Seconds before retry 1, 2, ...: quick first retry, then spread over about 36 hours.
DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
MAX_RETRIES = 30
DEFAULT_RIVYA_API_URL = "https://rivya.ai/api/v1"
RIVYA_API_KEY_PREFIX = "rvya_sk_"
# Prometheus scrapes every 15 s by default: gauges no older than one interval, and the
# whole-table counts behind them run at most once an interval however often anyone scrapes.
DEFAULT_METRICS_REFRESH_SECONDS = 15.0
# Events (bodies included) are kept a month unless set otherwise: long enough to replay
# or reprocess after any outage Rivya's own retries cover; 0 keeps them for ever.
DEFAULT_RETENTION_DAYS = 30.0
# The cutoff is a date: a century back is as far as it needs to be, and stays one.
MAX_RETENTION_DAYS = 36_500
# Retention runs hourly: a run then has an hour's worth to remove, a few chunks.
DEFAULT_RETENTION_INTERVAL_SECONDS = 3600.0
# At least daily, or a day's events would wait past their retention.
MAX_RETENTION_INTERVAL_SECONDS = 86_400


class Settings(BaseModel):
    # No float setting may be infinite or NaN: `inf` seconds would turn a deadline, a lease
    # or a pause off (a comparison with NaN is always false), and `gt=0` lets inf through.
    model_config = ConfigDict(
        frozen=True, extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False
    )

    database_url: str = DEFAULT_DATABASE_URL
    database_busy_timeout_seconds: float = Field(default=5.0, gt=0)
    signing_secrets: tuple[WebhookSecret, ...] = Field(min_length=1)
    timestamp_tolerance_seconds: int = Field(default=300, gt=0)
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    admin_token: SecretStr | None = None
    # The console's read-only sign-in: every page, no action.
    support_token: SecretStr | None = None
    console: bool = True
    console_session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    # /metrics shows the credit balance, spend by model and destination names: behind the
    # admin token unless opened here, or served open on METRICS_PORT, bound to loopback.
    metrics_public: bool = False
    metrics_port: int | None = Field(default=None, ge=1, le=MAX_PORT)
    # How old the database gauges may be when scraped (see receiver/metrics.py).
    metrics_refresh_seconds: float = Field(default=DEFAULT_METRICS_REFRESH_SECONDS, gt=0, le=3600)
    # Whether an incoming `traceparent` may be a request's parent span (see
    # receiver/tracing/http.py); untrusted, it is only linked. Tracing itself is configured
    # by the standard OTEL_* variables (receiver/tracing/variables.py).
    trace_trust_incoming: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # `auto`: `console` when the log stream is a terminal, `json` otherwise (see receiver/logs.py).
    log_format: Literal["auto", "json", "console"] = "auto"
    # Not in repr: a downstream URL may carry credentials.
    forward_url: str | None = Field(default=None, repr=False)
    forward_signing_secrets: tuple[WebhookSecret, ...] = ()
    forward_retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    forward_timeout_seconds: float = Field(default=10.0, gt=0)
    # The `default` destination's cap on attempts in flight.
    forward_concurrency: int = Field(default=32, gt=0, le=1024)
    forward_max_per_second: float | None = Field(default=None, ge=MIN_PER_SECOND, le=MAX_PER_SECOND)
    forward_lease_seconds: float = Field(default=60.0, gt=0)
    forward_poll_seconds: float = Field(default=0.5, gt=0)
    # Those of RECEIVER_DESTINATIONS_FILE, which `from_environment` reads; the file is kept
    # for a reload (receiver/reloading.py).
    destinations: tuple[Destination, ...] = ()
    destinations_file: Path | None = None
    # Reconciliation with Rivya's API runs only with a key.
    rivya_api_key: SecretStr | None = None
    rivya_api_url: str = DEFAULT_RIVYA_API_URL
    rivya_api_rate: float = Field(default=2.0, gt=0, le=100)
    rivya_api_timeout_seconds: float = Field(default=10.0, gt=0)
    reconcile_after_seconds: float = Field(default=900.0, gt=0)
    reconcile_interval_seconds: float = Field(default=60.0, gt=0)
    low_credits_threshold: int | None = Field(default=None, ge=0)
    # Operational events (receiver/operational): how long dead letters are gathered into one
    # event per destination, when a backlog or a record not terminal is stuck, and how
    # often the conditions are looked at.
    alert_coalesce_seconds: float = Field(default=300.0, gt=0, le=86_400)
    alert_backlog_age_seconds: float = Field(default=900.0, gt=0, le=30 * 86_400)
    alert_stuck_records_seconds: float = Field(default=3600.0, gt=0, le=30 * 86_400)
    # At least a tenth of a second: each check is a few queries, not to be run in a loop.
    alert_check_seconds: float = Field(default=15.0, ge=0.1, le=3600)
    # Apprise URLs each operational event is told to, as a message for people. Secrets (they
    # hold webhook tokens): never in repr, never logged or shown.
    notify_urls: tuple[SecretStr, ...] = Field(default=(), repr=False)
    # Where the console is reached from outside, for the links in messages.
    public_url: str | None = None
    # Scheduled retention in `serve` and `worker` (see receiver/pruner.py).
    retention_days: float = Field(default=DEFAULT_RETENTION_DAYS, ge=0, le=MAX_RETENTION_DAYS)
    retention_interval_seconds: float = Field(
        default=DEFAULT_RETENTION_INTERVAL_SECONDS, gt=0, le=MAX_RETENTION_INTERVAL_SECONDS
    )

    @field_validator("signing_secrets", "forward_signing_secrets", mode="before")
    @classmethod
    def _parse_signing_secrets(cls, value: Any) -> tuple[WebhookSecret, ...]:
        return parse_secrets(value)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        # Checked here, not at the first connection (a traceback), and never quoted back:
        # the URL holds the database's password.
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError(
                "not a database URL, like postgresql+asyncpg://user:password@host:5432/name"
            ) from None
        if url.drivername not in DATABASE_DRIVERS:
            schemes = " or ".join(f"{driver}://" for driver in DATABASE_DRIVERS)
            raise ValueError(f"use a URL that starts {schemes}")
        if url.port is not None and not 1 <= url.port <= MAX_PORT:
            raise ValueError(f"the port must be from 1 to {MAX_PORT}")
        if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
            raise ValueError("SQLite needs a file: an in-memory database loses every event")
        return value

    @field_validator("forward_url")
    @classmethod
    def _check_forward_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        # The base of the console's links, which messages carry to chat channels and
        # mailboxes: a user and password there would be shown to everyone who reads them, and
        # a query, fragment, space or control character would break (or add lines to) them.
        # Any `@` is refused, not only the authority's: no parser's reading of it can differ.
        if value is None:
            return None
        check_http_url(value)
        if any(char in "@?#" or char.isspace() or not char.isprintable() for char in value):
            raise ValueError(
                "use a base URL, like https://receiver.example.com: no user or password (@), "
                "query (?), fragment (#), space or control character"
            )
        return value.rstrip("/")

    @field_validator("notify_urls", mode="before")
    @classmethod
    def _parse_notify_urls(cls, value: Any) -> Any:
        return split_notify_urls(value) if isinstance(value, str) else value

    @field_validator("notify_urls")
    @classmethod
    def _check_notify_urls(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        check_notify_urls([url.get_secret_value() for url in value])
        return value

    @field_validator("rivya_api_url")
    @classmethod
    def _check_rivya_api_url(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("rivya_api_key")
    @classmethod
    def _check_rivya_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not (
            value.get_secret_value().startswith(RIVYA_API_KEY_PREFIX)
            and len(value.get_secret_value()) > len(RIVYA_API_KEY_PREFIX)
        ):
            raise ValueError(f"expected a Rivya secret key ({RIVYA_API_KEY_PREFIX}...)")
        return value

    @field_validator("forward_retry_schedule", mode="before")
    @classmethod
    def _parse_retry_schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        return value

    @field_validator("forward_retry_schedule")
    @classmethod
    def _check_retry_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) > MAX_RETRIES or any(not 0 < delay < 10**7 for delay in value):
            raise ValueError(f"give up to {MAX_RETRIES} positive delays in seconds")
        return value

    @model_validator(mode="after")
    def _check_forwarding(self) -> "Settings":
        if self.forward_url and not self.forward_signing_secrets:
            raise ValueError("RECEIVER_FORWARD_SIGNING_SECRETS is required with a forward URL")
        if self.forward_lease_seconds <= self.forward_timeout_seconds:
            raise ValueError(
                "RECEIVER_FORWARD_LEASE_SECONDS must exceed RECEIVER_FORWARD_TIMEOUT_SECONDS"
            )
        if (
            self.support_token is not None
            and self.admin_token is not None
            and self.support_token.get_secret_value() == self.admin_token.get_secret_value()
        ):
            raise ValueError("RECEIVER_SUPPORT_TOKEN: must differ from RECEIVER_ADMIN_TOKEN")
        if self.forward_url and DEFAULT_NAME in {d.name for d in self.destinations}:
            raise ValueError(
                f"RECEIVER_DESTINATIONS_FILE: destination {DEFAULT_NAME!r}: name: taken by the"
                " destination RECEIVER_FORWARD_URL defines"
            )
        return self

    @cached_property
    def forwarding(self) -> tuple[Destination, ...]:
        """Every destination events are forwarded to: `default` (RECEIVER_FORWARD_URL), if
        set, then the file's."""
        if self.forward_url is None:
            return self.destinations
        default = Destination(
            name=DEFAULT_NAME,
            url=self.forward_url,
            signing_secrets=self.forward_signing_secrets,
            max_in_flight=self.forward_concurrency,
            max_per_second=self.forward_max_per_second,
        )
        return (default, *self.destinations)

    def with_destinations(self, destinations: tuple[Destination, ...]) -> "Settings":
        """These settings with other destinations (a reload), checked as at start-up.

        Built anew, not by `model_copy`: that copies the cached `forwarding` as it was, and
        skips the rules across fields (the name `default` taken twice)."""
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        try:
            return type(self)(**(fields | {"destinations": destinations}))
        except ValidationError as exc:
            raise SettingsError(describe_errors(exc)) from None

    @property
    def reconcile_after(self) -> timedelta:
        """How long a record not terminal may go unchanged before it is stale (and due)."""
        return timedelta(seconds=self.reconcile_after_seconds)

    @field_validator("admin_token", "support_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(f"use at least {MIN_ADMIN_TOKEN_CHARS} characters")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], env_file: Path | None) -> "Settings":
        """Read `RECEIVER_*` from `environ`, falling back to `env_file` where it exists."""
        values = read_environment(environ, env_file)
        fields = {
            name.removeprefix(ENV_PREFIX).lower(): value
            for name, value in values.items()
            if name.startswith(ENV_PREFIX) and value not in (None, "")
        }
        file = fields.get("destinations_file")
        if "destinations" in fields:  # a field, but only ever the file's
            raise SettingsError(
                "RECEIVER_DESTINATIONS: is not recognised (RECEIVER_DESTINATIONS_FILE names a file)"
            )
        try:
            if file is not None:
                return cls(**fields, destinations=load_destinations(Path(file), values))
            return cls(**fields)
        except ValidationError as exc:
            # Not chained: the ValidationError carries the raw input, which may be a secret.
            raise SettingsError(describe_errors(exc)) from None


def read_environment(environ: Mapping[str, str], env_file: Path | None) -> dict[str, str | None]:
    """`environ` over `env_file` where it exists: what settings, and the secrets a
    destinations file names by variable, are read from."""
    values: dict[str, str | None] = {}
    if env_file is not None and env_file.is_file():
        values.update(dotenv_values(env_file))
    values.update(environ)
    return values


def env_variable(field: str) -> str:
    return ENV_PREFIX + field.upper()


def describe_errors(exc: ValidationError, name_of: Callable[[str], str] = env_variable) -> str:
    """One line per error, naming the field as `name_of` spells it.

    Built from parts because pydantic's own text echoes the input, which may be a secret.
    """
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        if not error["loc"]:  # a rule across fields names them itself
            lines.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        if error["type"] == "missing":
            message = "is required"
        elif error["type"] == "extra_forbidden":
            message = "is not recognised"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{name_of(str(error['loc'][0]))}: {message}")
    return "; ".join(lines)
