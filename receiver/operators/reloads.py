"""`receiver destinations reload`: check RECEIVER_DESTINATIONS_FILE as a reload would, and
say what applying it would change compared with what the service last applied (the
`applied_destinations` table). It signals nothing: SIGHUP to `serve` and `worker` reloads
(see receiver/reloading.py).

Run it where the service runs, with its environment: secrets named by `signing_secrets_env`
are read from this command's environment, as the service reads them from its own.
"""

from typing import Any

import click

from receiver.destinations import DEFAULT_NAME
from receiver.operators.inspection import read
from receiver.operators.terminal import emit, json_option, load_settings
from receiver.reloading import NOTHING_TO_RELOAD, Changes, compare, describe_all
from receiver.store.applied_destinations import applied_descriptions


@click.command("reload")
@json_option
def reload_command(as_json: bool) -> None:
    """Check the destinations file and print what a reload (SIGHUP to `serve` or `worker`)
    would change: destinations added and removed, and the keys changed in each other."""
    settings = load_settings()  # the file, checked as at start-up: one line if it cannot be used
    if settings.destinations_file is None:
        raise click.ClickException(NOTHING_TO_RELOAD)
    applied = read(applied_descriptions)
    if settings.forward_url is not None:
        # `default` is RECEIVER_FORWARD_URL's, read once at start: a reload never changes
        # it, whatever this command's environment says.
        applied.pop(DEFAULT_NAME, None)
    changes = compare(applied, describe_all(settings.destinations))
    emit(changes.as_dict(), as_json, lambda _: _shown(changes, applied))


def _shown(changes: Changes, applied: dict[str, Any]) -> str:
    if not applied:
        return "No configuration applied yet (start `receiver serve` or `worker` once)." + (
            f"\nThe file has: {', '.join(changes.added)}." if changes.added else ""
        )
    if not changes:
        return "No change: the file is what the service applied last."
    lines = [f"added:   {name}" for name in changes.added]
    lines += [f"removed: {name} (its pending deliveries orphaned)" for name in changes.removed]
    lines += [f"changed: {name}: {', '.join(keys)}" for name, keys in changes.changed.items()]
    return "\n".join(lines)
