"""Reloading RECEIVER_DESTINATIONS_FILE without a restart: SIGHUP to `serve` or `worker`.

The file is read and checked as at start-up (`load_destinations`, then the rules across
settings, `Settings.with_destinations`). A file that cannot be used changes nothing: the
process goes on with what it had, and logs one line, the SettingsError's, which names the
file, the destination and the key, never a secret. A valid one is handed to every part that
holds the destinations, each of which takes it between two of its own transactions: the
forwarder before its next claim (attempts in flight finish under the destination they
started with), ingest, reconciliation and the alerts before the next events they store, the
pruner before its next run, and the HTTP handlers (admin API, console, metrics) from their
next request. Reloads run one at a time, in the order the signals came.

Secrets a destination names by `signing_secrets_env` are read from the process's
environment (and `.env`), as at start-up: a reload cannot change the environment, only the
file. What the process applied is recorded in `applied_destinations` (no secrets: a URL
without its credentials, a fingerprint of each secret), at start-up and by each reload;
`receiver destinations reload` compares the file with it.
"""

import asyncio
import hashlib
import os
import signal
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog
import yarl
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.destinations import Destination, load_destinations, shown_url
from receiver.exceptions import SettingsError
from receiver.settings import Settings, read_environment
from receiver.signatures import WebhookSecret
from receiver.store.applied_destinations import Description, record_applied

log = structlog.get_logger("receiver.reloading")

# Hex digits of a signing secret's SHA-256 kept in a description: 48 bits tell a rotated
# secret from the one before at a glance, and say nothing of a 32-byte key.
FINGERPRINT_HEX = 12
# Where a reload reads the variables `signing_secrets_env` names, as `load_settings` does.
ENV_FILE = Path(".env")
NOTHING_TO_RELOAD = "RECEIVER_DESTINATIONS_FILE: is not set: there is nothing to reload"
# Reloads waiting for the one in progress: one is enough, as it reads the file when its turn
# comes, so a burst of signals costs two reloads, not one each.
MAX_WAITING_RELOADS = 1
# The record is for operators' comparisons only: a database that does not answer within this
# must not hold a start, or the reloads queued behind this one, any longer.
RECORD_TIMEOUT_SECONDS = 10.0
# How a changed secret is shown: never its value, nor its fingerprint, in a diff.
SECRETS_ROTATED = "signing secrets rotated"
# How a changed user or password in a destination's URL is shown: listings show the URL
# without them, so a diff of URLs alone would call a rotated password no change.
CREDENTIALS_ROTATED = "url credentials rotated"
# What a description's secret-bearing keys are shown as, in a diff.
SHOWN_AS = {"signing_secrets": SECRETS_ROTATED, "url_credentials": CREDENTIALS_ROTATED}


def ignore_reloads_until_ready() -> None:
    """Ignore SIGHUP until a Reloader listens for it (and again once it stops): its default
    action ends the process, and a configuration change signalled while `serve` or `worker`
    starts or stops must not kill it."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


class Reconfigurable(Protocol):
    def reconfigure(self, destinations: tuple[Destination, ...]) -> None: ...


def fingerprint(secret: WebhookSecret) -> str:
    return _fingerprint(secret.reveal())


def _fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_HEX]


def _credentials(url: str) -> str | None:
    """A fingerprint of the user and password in `url`, None when it has neither."""
    parsed = yarl.URL(url)
    if parsed.raw_user is None and parsed.raw_password is None:
        return None
    return _fingerprint(f"{parsed.raw_user or ''}:{parsed.raw_password or ''}")


def describe(destination: Destination) -> Description:
    """`destination` as `applied_destinations` keeps it: every setting, no secret (the URL
    without its user and password, as listings show it, and fingerprints of those and of
    the signing secrets)."""
    return {
        "url": shown_url(destination.url),
        "url_credentials": _credentials(destination.url),
        "event_types": sorted(destination.event_types) if destination.event_types else None,
        "outcomes": sorted(destination.outcomes) if destination.outcomes else None,
        "max_in_flight": destination.max_in_flight,
        "max_per_second": destination.max_per_second,
        "signing_secrets": [fingerprint(secret) for secret in destination.signing_secrets],
    }


def describe_all(destinations: Iterable[Destination]) -> dict[str, Description]:
    return {destination.name: describe(destination) for destination in destinations}


@dataclass(frozen=True, slots=True)
class Changes:
    """What applying one configuration over another changes: names added and removed, and
    for each destination kept, the keys that differ (secrets as SECRETS_ROTATED)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": {name: list(keys) for name, keys in self.changed.items()},
        }


def compare(before: Mapping[str, Description], after: Mapping[str, Description]) -> Changes:
    changed = {}
    for name in sorted(before.keys() & after.keys()):
        keys = sorted(
            key
            for key in before[name].keys() | after[name].keys()
            if before[name].get(key) != after[name].get(key)
        )
        if keys:
            changed[name] = tuple(SHOWN_AS.get(key, key) for key in keys)
    return Changes(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        changed=changed,
    )


def read_destinations_file(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """`settings` with RECEIVER_DESTINATIONS_FILE read again; SettingsError (one line naming
    the file, destination and key) if it cannot be used."""
    if settings.destinations_file is None:
        raise SettingsError(NOTHING_TO_RELOAD)
    values = read_environment(environ, ENV_FILE)
    return settings.with_destinations(load_destinations(settings.destinations_file, values))


async def record_configuration(engine: AsyncEngine, settings: Settings) -> None:
    """Write what this process applies to `applied_destinations`. Told, not raised, when the
    database refuses: the configuration is applied all the same, and the next reload or
    start writes it again."""
    try:
        async with asyncio.timeout(RECORD_TIMEOUT_SECONDS), engine.begin() as connection:
            await record_applied(connection, describe_all(settings.forwarding), datetime.now(UTC))
    except (SQLAlchemyError, OSError) as exc:  # TimeoutError is an OSError
        log.warning("destinations_record_failed", error_class=type(exc).__name__)


class Reloader:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        parts: Sequence[Reconfigurable | None],
        on_settings: Callable[[Settings], None] | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        """`parts`: what holds the destinations (None for one this process does not run);
        `on_settings(settings)`: told of the new settings (the HTTP handlers' services)."""
        self._engine = engine
        self._settings = settings
        self._parts = [part for part in parts if part is not None]
        self._on_settings = on_settings
        self._environ = environ
        self._lock = asyncio.Lock()
        self._running: set[asyncio.Task[Changes | None]] = set()
        self._listening = False

    @property
    def settings(self) -> Settings:
        return self._settings

    async def reload(self) -> Changes | None:
        """Read the file again and apply it; what changed, or None when it could not be used."""
        async with self._lock:
            try:
                # In a thread: the file may sit on a slow volume (a ConfigMap's, over NFS).
                settings = await asyncio.to_thread(
                    read_destinations_file, self._settings, self._environ
                )
            except SettingsError as exc:
                # A warning: the service goes on, as configured before.
                log.warning("destinations_reload_failed", reason=str(exc))
                return None
            changes = compare(
                describe_all(self._settings.forwarding), describe_all(settings.forwarding)
            )
            self._settings = settings
            for part in self._parts:
                part.reconfigure(settings.forwarding)
            if self._on_settings is not None:
                self._on_settings(settings)
            log.info(
                "destinations_reloaded",
                destinations=[d.name for d in settings.forwarding],
                added=list(changes.added),
                removed=list(changes.removed),
                changed=changes.as_dict()["changed"],
            )
            await record_configuration(self._engine, settings)
            return changes

    async def __aenter__(self) -> "Reloader":
        # Signals reach only the main thread's loop; an app run elsewhere (a test's) is
        # reloaded by calling `reload`.
        if threading.current_thread() is threading.main_thread():
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_signal)
            self._listening = True
        await record_configuration(self._engine, self._settings)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._listening:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            # Removing the handler restores SIGHUP's default, which ends the process: a
            # signal sent during the stop would cut it short (claims not handed back,
            # outcomes not written). Ignored until the process ends.
            ignore_reloads_until_ready()
        # Not waited for: the parts are stopping, and a read may hang (a file on a volume
        # that does not answer) where a stop must not.
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    def _on_signal(self) -> None:
        if len(self._running) > MAX_WAITING_RELOADS:
            return  # one in progress and one waiting: the waiting one reads the file anew
        task = asyncio.create_task(self.reload(), name="reload")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
