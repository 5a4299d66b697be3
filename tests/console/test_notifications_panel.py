"""The overview's Notifications panel against a real server: off without notification URLs,
"None sent yet" before any, then the last ones with how many URLs took each, escaped; no
notification URL or token on the page."""

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from receiver.store.database import create_engine, transaction
from receiver.store.notifications import record_notification
from tests.conftest import Sensitive
from tests.console.conftest import Browser
from tests.helpers import Downstream, ReceiverProcess
from tests.notify_endpoint import NotifyEndpoint

HOSTILE = "</td><script>alert(1)</script><img src=x onerror=alert(2)>"


@pytest.fixture
def endpoint(sensitive: Sensitive) -> Iterator[NotifyEndpoint]:
    made = NotifyEndpoint()
    sensitive.add(*made.secrets())
    yield made
    made.stop()


def record(database_url: str, title: str, delivered: int, failed: int) -> None:
    async def write() -> None:
        engine = create_engine(database_url, 10)
        try:
            async with transaction(engine) as connection:
                await record_notification(
                    connection,
                    "receiver:delivery.dead:abc",
                    "receiver.delivery.dead",
                    title,
                    datetime(2026, 12, 1, 22, 4, 5, tzinfo=UTC),
                    delivered,
                    failed,
                )
        finally:
            await engine.dispose()

    asyncio.run(write())


def test_the_overview_shows_the_last_notifications_and_whether_they_went_out(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    endpoint: NotifyEndpoint,
    browsers: list[Browser],
) -> None:
    server = start_server(
        forward_url=own_downstream().url, notify_urls=f"{endpoint.url()} {endpoint.url()}"
    )
    browsers.append(Browser(server.url))
    browser = browsers[-1]
    assert browser.sign_in().status_code == 303
    assert "None sent yet." in browser.get("/console/").text

    database_url = server.env["RECEIVER_DATABASE_URL"]
    record(database_url, "Dead letters: billing", delivered=2, failed=0)
    record(database_url, HOSTILE, delivered=1, failed=1)
    page = browser.get("/console/").text
    panel = page[page.index('<section id="notifications">') :]
    panel = panel[: panel.index("</section>")]
    assert "Dead letters: billing" in panel
    assert "to 2 of 2" in panel
    assert "to 1 of 2; 1 failed" in panel
    assert HOSTILE not in page
    assert "&lt;/td&gt;&lt;script&gt;" in panel
    assert panel.index("1 failed") < panel.index("Dead letters: billing")  # newest first
    assert '<time datetime="2026-12-01T22:04:05+00:00"' in panel
    assert 'href="/console/events/receiver%3Adelivery.dead%3Aabc"' in panel
    for secret in endpoint.secrets():
        assert secret not in page


def test_without_notification_urls_the_panel_says_they_are_off(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    browsers: list[Browser],
) -> None:
    server = start_server(forward_url=own_downstream().url)
    browsers.append(Browser(server.url))
    assert browsers[-1].sign_in().status_code == 303
    page = browsers[-1].get("/console/").text
    assert "Notifications are off: set <code>RECEIVER_NOTIFY_URLS</code>." in page
