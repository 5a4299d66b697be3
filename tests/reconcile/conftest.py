import secrets
from collections.abc import Iterator

import pytest

from tests.conftest import SECRETS_OF_THE_RUN, Sensitive
from tests.fake_rivya import FakeRivya

# The store's empty database of each backend, for passes run in-process against it.
from tests.store.conftest import engine  # noqa: F401 (a fixture, found by its name)


def serve_fake_rivya(sensitive: Sensitive) -> Iterator[FakeRivya]:
    """Rivya's API, with a key of its own that no log, answer or output may show."""
    key = f"rvya_sk_{secrets.token_hex(16)}"
    for registry in (sensitive, SECRETS_OF_THE_RUN):
        registry.add(key)
    api = FakeRivya(key)
    yield api
    api.stop()


@pytest.fixture
def fake_rivya(sensitive: Sensitive) -> Iterator[FakeRivya]:
    yield from serve_fake_rivya(sensitive)


def reconciling(api: FakeRivya, **more: str) -> dict[str, str]:
    """The settings that point reconciliation at `api` (quick, for tests), and `more`."""
    return {
        "rivya_api_key": api.key,
        "rivya_api_url": api.url,
        "rivya_api_rate": "50",
        "rivya_api_timeout_seconds": "1",
        **more,
    }
