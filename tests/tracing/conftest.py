"""The tracing tests' collector, and their servers exporting to it.

Every server of a tracing module exports to the module's `collector`: `server_env` here is
the suite's own plus the collector's OTEL_* variables, so `server`, `rivya` and
`start_server` are traced as they are. A server of the test's own collector is
`start_server(**own_collector().env())` (request `own_collector` first, so that the
server stops before its collector). Every collector, at its end, scans every span it
was sent for what must never be in one. `rivya_at(server)` sends to a server of the
test's own as Rivya does.

The module's collector does not depend on the backend, so both backends' servers export to
it: find a test's spans by its own IDs (an event's, a parent's, a link's), never by name
alone."""

from collections.abc import Iterator

import pytest

from tests.conftest import ADMIN_TOKEN, Rivya, Sensitive
from tests.console.conftest import SUPPORT_TOKEN
from tests.otlp_collector import Collector
from tests.tracing.traces import RivyaAt, StartCollector

# What no span may hold, whichever test's values they are: a signing secret's or a Rivya
# API key's prefix, an Authorization header's scheme, and the suite's fixed tokens.
NEVER_IN_A_SPAN = ("whsec_", "rvya_sk_", "Bearer ", ADMIN_TOKEN, SUPPORT_TOKEN)


def assert_no_leaks(collector: Collector, sensitive: Sensitive) -> None:
    """No exported span carries a module's registered value (secrets, signatures, bodies,
    result URLs, Rivya's API key) or any of NEVER_IN_A_SPAN."""
    spans = collector.spans()
    leaks = {
        span.name: found
        for span in spans
        if (
            found := [
                value for value in (*sensitive.values, *NEVER_IN_A_SPAN) if value in span.text()
            ]
        )
    }
    assert leaks == {}, "a sensitive value reached a span"


@pytest.fixture(scope="module")
def collector(sensitive: Sensitive) -> Iterator[Collector]:
    """The module's OTLP/HTTP collector; at the end, every span it got is scanned."""
    found = Collector()
    yield found
    found.stop()
    assert_no_leaks(found, sensitive)


@pytest.fixture
def own_collector(sensitive: Sensitive) -> Iterator[StartCollector]:
    """Collectors of the test's own (answering `status`, or hanging), scanned at the end."""
    started: list[Collector] = []

    def start(status: int = 200, hang: bool = False) -> Collector:
        started.append(Collector(status, hang))
        return started[-1]

    yield start
    for found in started:
        found.stop()
        assert_no_leaks(found, sensitive)


@pytest.fixture
def rivya_at(secrets_in_use: tuple[str, str], sensitive: Sensitive) -> RivyaAt:
    """Rivya, sending to a server of the test's own with the module's current secret."""
    return lambda server: Rivya(server, secrets_in_use[0], sensitive)


@pytest.fixture(scope="module")
def server_env(server_env: dict[str, str], collector: Collector) -> dict[str, str]:
    """The suite's settings, exporting traces to the module's collector."""
    return {**server_env, **collector.env()}
