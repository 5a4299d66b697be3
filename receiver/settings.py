"""All configuration, read once at the edge into one typed, immutable `Settings`.

Values come from `RECEIVER_*` environment variables, over an optional `.env` file.
Tests build `Settings(...)` directly. Secrets are held in objects whose repr hides them,
and an unusable value stops start-up with one line naming its variable (never its value).
"""

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from receiver.exceptions import SettingsError
from receiver.signatures import WebhookSecret

ENV_PREFIX = "RECEIVER_"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/receiver.db"
MIN_ADMIN_TOKEN_CHARS = 16


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    database_url: str = DEFAULT_DATABASE_URL
    database_busy_timeout_seconds: float = Field(default=5.0, gt=0)
    signing_secrets: tuple[WebhookSecret, ...] = Field(min_length=1)
    timestamp_tolerance_seconds: int = Field(default=300, gt=0)
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    admin_token: SecretStr | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    @field_validator("signing_secrets", mode="before")
    @classmethod
    def _parse_signing_secrets(cls, value: Any) -> tuple[WebhookSecret, ...]:
        if isinstance(value, str):
            value = [part for part in re.split(r"[,\s]+", value) if part]
        return tuple(
            item if isinstance(item, WebhookSecret) else WebhookSecret.parse(item) for item in value
        )

    @field_validator("admin_token")
    @classmethod
    def _check_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
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
        values: dict[str, str | None] = {}
        if env_file is not None and env_file.is_file():
            values.update(dotenv_values(env_file))
        values.update(environ)
        fields = {
            name.removeprefix(ENV_PREFIX).lower(): value
            for name, value in values.items()
            if name.startswith(ENV_PREFIX) and value not in (None, "")
        }
        try:
            return cls(**fields)
        except ValidationError as exc:
            # Not chained: the ValidationError carries the raw input, which may be a secret.
            raise SettingsError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    # Pydantic's own text echoes the input, which may be a secret: build ours from parts.
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        variable = ENV_PREFIX + str(error["loc"][0]).upper() if error["loc"] else ENV_PREFIX
        if error["type"] == "missing":
            message = "is required"
        elif error["type"] == "extra_forbidden":
            message = "is not a known setting"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{variable}: {message}")
    return "; ".join(lines)
