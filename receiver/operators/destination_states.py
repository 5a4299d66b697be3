"""Disabling and enabling a destination by hand: one action (`switch_destination`) for the
three front ends, the CLI commands here, the admin API and the console.

The state is a row of `disabled_destinations` (`store.destination_states`), read by every
forwarder in every claiming transaction, so a change is every replica's and survives
restarts. Enabling on PostgreSQL also notifies the forwarders' channel in its transaction:
each claims the waiting deliveries on commit instead of at its next poll. Each call writes
one `audit` line (who, what, the destination, and `count` 1 if it changed anything, 0 if
not); the reason is stored and shown, never logged: it is an operator's free text.
"""

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from receiver.destinations import Destination, find_destination
from receiver.exceptions import InvalidRequestError
from receiver.forward.forwarder import DELIVERIES_CHANNEL
from receiver.logs import log
from receiver.operators.terminal import emit, json_option, load_settings, run_with_store
from receiver.store.database import transaction
from receiver.store.destination_states import (
    MAX_REASON_CHARS,
    Disabled,
    disable_destination,
    disabled_destinations_in,
    enable_destination,
)

WHO = "cli"


@dataclass(frozen=True, slots=True)
class Switched:
    """What one call did. `enable`: what was asked; `changed`: whether this call changed
    the state; `state`: the destination's disabled row (for a disable, the one it has now,
    this call's or an earlier one; for an enable, the one removed), None if it had none."""

    destination: str
    enable: bool
    changed: bool
    state: Disabled | None

    def as_json(self) -> dict[str, Any]:
        state = self.state
        return {
            "destination": self.destination,
            "disabled": not self.enable,
            "changed": self.changed,
            "disabled_at": state.disabled_at.isoformat() if state else None,
            "disabled_by": state.disabled_by if state else None,
            "reason": state.reason if state else None,
        }

    def __str__(self) -> str:
        name, state = self.destination, self.state
        since = (
            f"since {state.disabled_at.isoformat()}, by {state.disabled_by}"
            + (f": {state.reason}" if state.reason else "")
            if state
            else ""
        )
        if self.enable:
            if self.changed:
                return f"Enabled {name} (disabled {since}): its pending deliveries are sent."
            return f"{name} was not disabled: nothing changed."
        if self.changed:
            return f"Disabled {name}: its pending deliveries wait until it is enabled."
        return f"{name} was already disabled ({since}): nothing changed."


# Unicode categories a reason may not hold (see `checked_reason`).
UNSHOWN = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})


def checked_reason(reason: str | None) -> str | None:
    """A reason as stored: stripped, None if blank; InvalidRequestError past
    MAX_REASON_CHARS or holding a character that is not shown as itself: a control character
    (a line break or a NUL would break the one-line listings that show it, and PostgreSQL
    refuses NUL in any text), a format character (a right-to-left override turns the rest
    of a terminal's line around; a zero-width space makes a reason look blank), a line or
    paragraph separator, or a private, unassigned or surrogate code point."""
    if reason is None or not reason.strip():
        return None
    reason = reason.strip()
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidRequestError(f"reason: at most {MAX_REASON_CHARS} characters")
    if any(unicodedata.category(character) in UNSHOWN for character in reason):
        raise InvalidRequestError(
            "reason: no control, format or separator characters (line breaks, tabs, NUL,"
            " direction overrides, zero-width spaces)"
        )
    return reason


async def switch_destination(
    engine: AsyncEngine,
    destinations: Sequence[Destination],
    name: str,
    enable: bool,
    who: str,
    reason: str | None = None,
) -> Switched:
    """Enable or disable `name` (a configured destination; one no longer configured may
    still be enabled while it is disabled), by `who`, for `reason` (a disable's only)."""
    reason = checked_reason(reason)
    async with transaction(engine) as connection:
        if enable:
            switched = await _enable(connection, destinations, name)
        else:
            find_destination(destinations, name)
            now = datetime.now(UTC)
            changed = await disable_destination(connection, name, who, reason, now)
            state = (await disabled_destinations_in(connection)).get(name)
            switched = Switched(name, False, changed, state)
        if switched.changed and connection.dialect.name == "postgresql":
            # Delivered on commit: every forwarder wakes and reads the state in a claiming
            # transaction at once, enabled to claim what waited, disabled to hand back
            # what it held, rather than at its next poll.
            await connection.execute(
                sa.select(sa.func.pg_notify(sa.literal(DELIVERIES_CHANNEL), sa.literal("")))
            )
    what = "enable_destination" if enable else "disable_destination"
    log.info("audit", who=who, what=what, destination=name, count=int(switched.changed))
    return switched


async def _enable(
    connection: AsyncConnection, destinations: Sequence[Destination], name: str
) -> Switched:
    # Refused before any statement names it: a name no destination has is any text.
    known = {d.name for d in destinations} | set(await disabled_destinations_in(connection))
    if name not in known:
        find_destination(destinations, name)
    ended = await enable_destination(connection, name)
    return Switched(name, True, ended is not None, ended)


def _switch(name: str, enable: bool, reason: str | None, as_json: bool) -> None:
    destinations = load_settings().forwarding

    async def run(engine: AsyncEngine) -> Switched:
        return await switch_destination(engine, destinations, name, enable, WHO, reason)

    switched = run_with_store(run)
    emit(switched.as_json(), as_json, lambda _: str(switched))


@click.command("enable")
@click.argument("name")
@json_option
def enable_command(name: str, as_json: bool) -> None:
    """Enable a destination disabled by a 410 Gone or by hand: its pending deliveries are
    sent again, by every replica."""
    _switch(name, True, None, as_json)


@click.command("disable")
@click.argument("name")
@click.option("--reason", help=f"Why, shown with it (at most {MAX_REASON_CHARS} characters).")
@json_option
def disable_command(name: str, reason: str | None, as_json: bool) -> None:
    """Disable a destination: no replica starts an attempt to it; its pending deliveries
    wait, shown as disabled, until it is enabled."""
    _switch(name, False, reason, as_json)
