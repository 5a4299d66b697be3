"""Where stored events are forwarded: named destinations, each with its own URL, signing
secrets, filters and cap on attempts in flight.

They come from two places, read once at start-up: `RECEIVER_FORWARD_URL` (with
`RECEIVER_FORWARD_SIGNING_SECRETS`) makes the destination `default`, with no filters (so
`DEFAULT_OUTCOMES`); `RECEIVER_DESTINATIONS_FILE` names a TOML file of
`[[destinations]]` tables. A file that cannot be used stops start-up with one line naming
the file, the destination and the key, never a secret's value.
"""

import os
import re
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yarl
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from receiver.exceptions import InvalidRequestError, SettingsError
from receiver.forward.rate import MAX_PER_SECOND, MIN_PER_SECOND
from receiver.model import OPERATIONAL_TYPES, Outcome, is_operational
from receiver.operational.events import OperationalType
from receiver.signatures import WebhookSecret

DEFAULT_NAME = "default"
DEFAULT_MAX_IN_FLIGHT = 32
MAX_IN_FLIGHT = 1024
NAME_PATTERN = r"^[a-z0-9-]{1,64}$"
# What a destination without an `outcomes` filter is sent: what changed a record, and the
# other outcomes but `stale`. A stale event repeats a result the subscriber was already sent
# under another webhook-id (a `reconciled:...` event, then Rivya's late webhook), or is older
# than it: sent by default, a subscriber deduplicating by webhook-id would process a result
# twice, and one applying what arrives would face the ordering the record's never-regress
# rule solves. A destination that wants them names `stale` in its `outcomes`.
DEFAULT_OUTCOMES = frozenset(
    {Outcome.APPLIED.value, Outcome.IGNORED.value, Outcome.QUARANTINED.value}
)
EVERY_OUTCOME = frozenset(outcome.value for outcome in Outcome)


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    # Not in repr: a URL may carry credentials.
    url: str = field(repr=False)
    signing_secrets: tuple[WebhookSecret, ...] = field(repr=False)
    # None: every event type; DEFAULT_OUTCOMES.
    event_types: frozenset[str] | None = None
    outcomes: frozenset[str] | None = None
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    # Attempts started a second, at most (see `forward.rate`); None: as many as the lane's
    # width allows.
    max_per_second: float | None = None

    @property
    def wanted_outcomes(self) -> frozenset[str]:
        return DEFAULT_OUTCOMES if self.outcomes is None else self.outcomes

    def wants(self, event_type: str | None, outcome: str) -> bool:
        """Whether an event of this type, stored with this outcome, is sent here. The
        service's own events (`receiver.*`) go only where `event_types` names them, by type
        or all of them (OPERATIONAL_TYPES), whatever their outcome: a destination that names
        no types goes on receiving Rivya's events alone."""
        if is_operational(event_type):
            return self.event_types is not None and bool(
                {event_type, OPERATIONAL_TYPES} & self.event_types
            )
        return (
            self.event_types is None or event_type in self.event_types
        ) and outcome in self.wanted_outcomes


def find_destination(destinations: Sequence[Destination], name: str) -> Destination:
    """The destination called `name`. Every command and endpoint that takes a destination's
    name refuses an unknown one here, so in the same words."""
    for destination in destinations:
        if destination.name == name:
            return destination
    raise InvalidRequestError(f"destination: {name!r} is not configured")


def check_http_url(value: str) -> str:
    """`value` if it is an absolute http(s) URL; ValueError otherwise."""
    try:
        url = yarl.URL(value)
    except (ValueError, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ValueError("use an absolute http:// or https:// URL")
    return value


def shown_url(value: str) -> str:
    """`value` without its user and password, for listings."""
    return str(yarl.URL(value).with_user(None))


def parse_secrets(value: str | Sequence[str | WebhookSecret]) -> tuple[WebhookSecret, ...]:
    """Secrets given as one string (separated by commas or spaces) or as a list."""
    if isinstance(value, str):
        value = [part for part in re.split(r"[,\s]+", value) if part]
    return tuple(
        item if isinstance(item, WebhookSecret) else WebhookSecret.parse(item) for item in value
    )


class _Entry(BaseModel):
    """One `[[destinations]]` table as written."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(pattern=NAME_PATTERN)
    url: str
    signing_secrets_env: str | None = None
    signing_secrets: SecretStr | None = None
    event_types: list[str] | None = Field(default=None, min_length=1)
    outcomes: list[Outcome] | None = Field(default=None, min_length=1)
    max_in_flight: int = Field(default=DEFAULT_MAX_IN_FLIGHT, gt=0, le=MAX_IN_FLIGHT)
    max_per_second: float | None = Field(default=None, ge=MIN_PER_SECOND, le=MAX_PER_SECOND)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("event_types")
    @classmethod
    def _check_operational_types(cls, value: list[str] | None) -> list[str] | None:
        # A misspelt `receiver.` type would match nothing, silently, for ever.
        known = {OPERATIONAL_TYPES, *OperationalType}
        unknown = [t for t in value or () if is_operational(t) and t not in known]
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} is none of the service's own event types: use "
                f"{OPERATIONAL_TYPES} or one of {', '.join(OperationalType)}"
            )
        return value

    @field_validator("outcomes", mode="before")
    @classmethod
    def _outcomes_as_enum(cls, value: Any) -> Any:
        # Strict mode takes no plain strings for an enum; TOML has nothing else.
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            try:
                return [Outcome(item) for item in value]
            except ValueError:
                raise ValueError(
                    f"use some of {', '.join(outcome.value for outcome in Outcome)}"
                ) from None
        return value


def load_destinations(path: Path, environ: Mapping[str, str | None]) -> tuple[Destination, ...]:
    """The destinations `path` describes; `environ` holds what `signing_secrets_env` names."""
    where = f"RECEIVER_DESTINATIONS_FILE {path}"
    try:
        with path.open("rb") as file:
            mode = os.fstat(file.fileno()).st_mode  # of the file opened, not of a later one
            document = tomllib.load(file)
    except OSError as exc:
        raise SettingsError(f"{where}: cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{where}: not valid TOML ({exc})") from None
    tables = document.pop("destinations", None)
    if document:
        raise SettingsError(f"{where}: {sorted(document)[0]}: is not recognised")
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise SettingsError(f"{where}: destinations: give one or more [[destinations]] tables")
    destinations: list[Destination] = []
    for number, table in enumerate(tables, start=1):
        label = f"destination {table.get('name')!r}" if table.get("name") else f"table {number}"
        try:
            entry = _Entry.model_validate(table)
            destination = _destination(entry, environ, mode)
        except ValidationError as exc:
            error = exc.errors(include_input=False, include_url=False)[0]
            key = ".".join(str(part) for part in error["loc"][:1]) or "table"
            message = _message(error["type"], str(error["msg"]))
            raise SettingsError(f"{where}: {label}: {key}: {message}") from None
        except ValueError as exc:  # a rule across keys, which names its key itself
            raise SettingsError(f"{where}: {label}: {exc}") from None
        if destination.name in {d.name for d in destinations}:
            raise SettingsError(f"{where}: {label}: name: used by an earlier destination")
        destinations.append(destination)
    return tuple(destinations)


def _destination(entry: _Entry, environ: Mapping[str, str | None], mode: int) -> Destination:
    if (entry.signing_secrets is None) == (entry.signing_secrets_env is None):
        raise ValueError("signing_secrets_env: give it or signing_secrets, not both or neither")
    if entry.signing_secrets is not None:
        # As ssh does with a private key: a secret in a file others can read is not secret.
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ValueError(
                "signing_secrets: the file holds a secret but group or others may read it"
                " (chmod 600 it, or use signing_secrets_env)"
            )
        text = entry.signing_secrets.get_secret_value()
    else:
        text = environ.get(entry.signing_secrets_env or "") or ""
        if not text:
            raise ValueError(f"signing_secrets_env: {entry.signing_secrets_env} is not set")
    try:
        secrets = parse_secrets(text)
    except ValueError as exc:
        key = "signing_secrets" if entry.signing_secrets is not None else "signing_secrets_env"
        raise ValueError(f"{key}: {exc}") from None
    if not secrets:
        raise ValueError("signing_secrets: give at least one whsec_ secret")
    return Destination(
        name=entry.name,
        url=entry.url,
        signing_secrets=secrets,
        event_types=frozenset(entry.event_types) if entry.event_types else None,
        outcomes=frozenset(o.value for o in entry.outcomes) if entry.outcomes else None,
        max_in_flight=entry.max_in_flight,
        max_per_second=entry.max_per_second,
    )


def _message(error_type: str, text: str) -> str:
    if error_type == "missing":
        return "is required"
    if error_type == "extra_forbidden":
        return "is not recognised"
    if error_type == "string_pattern_mismatch":
        return "use 1 to 64 of a-z, 0-9 and -"
    return text.removeprefix("Value error, ")
