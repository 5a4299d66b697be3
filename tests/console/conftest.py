import re
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, SECRETS_OF_THE_RUN, Sensitive

# The reconciliation tests' fake Rivya API: the console asks it too (test_actions.py).
from tests.reconcile.conftest import fake_rivya  # noqa: F401 - a fixture, shared

SUPPORT_TOKEN = "support-token-for-tests-9876543210"  # noqa: S105 - a test fixture's token
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module", autouse=True)
def _support_token_is_sensitive(sensitive: Sensitive) -> None:
    for registry in (sensitive, SECRETS_OF_THE_RUN):
        registry.add(SUPPORT_TOKEN)


class Browser:
    """A plain HTTP client with a cookie jar, as a browser without script would be."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, follow_redirects=False, timeout=10)

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.client.get(path, params=params)

    def post(self, path: str, **form: str) -> httpx.Response:
        return self.client.post(path, data=form)

    def csrf(self, path: str = "/console/") -> str:
        found = CSRF.search(self.get(path).text)
        assert found, f"no form on {path}"
        return found[1]

    def sign_in(self, token: str = ADMIN_TOKEN) -> httpx.Response:
        csrf = self.csrf("/console/login")
        return self.post("/console/login", csrf=csrf, token=token)


@pytest.fixture
def browsers() -> Iterator[list[Browser]]:
    made: list[Browser] = []
    yield made
    for browser in made:
        browser.client.close()
