"""The reload's own parts, in-process: the comparison it logs and prints, the settings it
builds, and its bounds (a burst of signals, a read that hangs). Through real processes:
tests/test_reload.py."""

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.destinations import Destination
from receiver.exceptions import SettingsError
from receiver.reloading import (
    CREDENTIALS_ROTATED,
    SECRETS_ROTATED,
    Reloader,
    compare,
    describe,
    describe_all,
    fingerprint,
)
from receiver.settings import Settings
from receiver.signatures import WebhookSecret
from receiver.store.database import create_engine, upgrade_schema
from tests.helpers import destination, new_secret, write_destinations

pytestmark = pytest.mark.anyio


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'receiver.db'}", 10)
    await upgrade_schema(engine)
    yield engine
    await engine.dispose()


def _settings(**values: object) -> Settings:
    return Settings(signing_secrets=(WebhookSecret.generate(),), **values)


def test_compare_names_added_removed_and_the_keys_changed_never_a_secret() -> None:
    secret = new_secret()
    kept = destination("kept", url="https://user:pw@kept.example/in", secret=secret)
    before = describe_all([kept, destination("gone")])
    after = describe_all(
        [
            replace(kept, max_in_flight=4, signing_secrets=(WebhookSecret.generate(),)),
            destination("new"),
        ]
    )
    changes = compare(before, after)
    assert changes.as_dict() == {
        "added": ["new"],
        "removed": ["gone"],
        "changed": {"kept": ["max_in_flight", SECRETS_ROTATED]},
    }
    assert not compare(before, before)
    shown = describe(kept)
    assert shown["url"] == "https://kept.example/in", "no credentials"
    assert "pw" not in str(shown["url_credentials"])
    assert shown["signing_secrets"] == [fingerprint(WebhookSecret.parse(secret))]
    assert secret.removeprefix("whsec_") not in str(shown)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:rotated@kept.example/in",
        "https://other:pw@kept.example/in",
        "https://kept.example/in",
    ],
)
def test_a_changed_user_or_password_in_the_url_is_a_change_shown_without_it(url: str) -> None:
    """Listings show the URL without them, so the URLs alone would compare equal."""
    kept = destination("kept", url="https://user:pw@kept.example/in")
    changes = compare(describe_all([kept]), describe_all([replace(kept, url=url)]))
    assert changes.as_dict()["changed"] == {"kept": [CREDENTIALS_ROTATED]}
    assert "rotated" not in str(describe(replace(kept, url=url))), "the password is not kept"


def test_with_destinations_builds_forwarding_anew_and_checks_the_rules_across_fields() -> None:
    """`model_copy` would keep the cached `forwarding` of the settings it copies."""
    settings = _settings(forward_url="https://d.example/", forward_signing_secrets=new_secret())
    assert [d.name for d in settings.forwarding] == ["default"]
    reloaded = settings.with_destinations((destination("billing"),))
    assert [d.name for d in reloaded.forwarding] == ["default", "billing"]
    with pytest.raises(SettingsError, match="destination 'default': name: taken"):
        settings.with_destinations((destination("default"),))


class _Parts:
    def __init__(self) -> None:
        self.applied: list[tuple[str, ...]] = []

    def reconfigure(self, destinations: tuple[Destination, ...]) -> None:
        self.applied.append(tuple(d.name for d in destinations))


async def test_a_burst_of_signals_while_a_read_hangs_queues_one_reload_and_a_stop_does_not_wait(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """The file is a FIFO nobody writes: the read hangs. Ten signals make one reload in
    progress and one waiting; the stop returns at once; the thread is then let go."""
    fifo = tmp_path / "destinations.toml"
    os.mkfifo(fifo)
    parts = _Parts()
    reloader = Reloader(engine, _settings(destinations_file=fifo), [parts])
    async with reloader:
        for _ in range(10):
            reloader._on_signal()
        await asyncio.sleep(0.1)
        assert len(reloader._running) == 2
    assert reloader._running == set() or all(t.cancelled() for t in reloader._running)
    assert parts.applied == []
    # Let the hanging read end (a writer opens the FIFO and closes it: an empty file).
    threading.Thread(target=lambda: fifo.open("w").close(), daemon=True).start()


async def test_a_reload_applies_a_valid_file_to_every_part_and_records_it(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    file = tmp_path / "destinations.toml"
    table = {"name": "a", "url": "https://a.example/", "signing_secrets": new_secret()}
    write_destinations(file, table)
    parts, told = _Parts(), list[Settings]()
    reloader = Reloader(engine, _settings(destinations_file=file), [parts, None], told.append)
    async with reloader:
        changes = await reloader.reload()
        assert changes is not None
        assert changes.added == ("a",)
        assert parts.applied == [("a",)]
        assert [d.name for d in told[0].forwarding] == ["a"]
        file.write_text("not toml")
        assert await reloader.reload() is None
        assert parts.applied == [("a",)], "a broken file changes nothing"
        assert [d.name for d in reloader.settings.forwarding] == ["a"]
