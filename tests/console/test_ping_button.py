"""The console's "Send test event" button on a destination's page: for the admin role with
the session's CSRF token only, audited, and its answer shown on the page, HTML-escaped."""

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from markupsafe import escape

from tests.conftest import ADMIN_TOKEN
from tests.console.conftest import SUPPORT_TOKEN, Browser
from tests.forward.answering import Answer, AnsweringSink
from tests.helpers import ReceiverProcess, only, write_destinations

pytestmark = pytest.mark.any_backend  # nothing a ping does touches the database

HOSTILE = b'<script>alert("x")</script>\x00\xff & more'
PAGE = "/console/destinations/billing"


@pytest.fixture
def sink(forward_secret: str) -> Iterator[AnsweringSink]:
    made = AnsweringSink(forward_secret, Answer(503, HOSTILE))
    yield made
    made.stop()


@pytest.fixture
def server(
    start_server: Callable[..., ReceiverProcess],
    sink: AnsweringSink,
    forward_secret: str,
    tmp_path: Path,
) -> ReceiverProcess:
    table = {"name": "billing", "url": sink.url, "signing_secrets": forward_secret}
    file = write_destinations(tmp_path / "destinations.toml", table)
    return start_server(support_token=SUPPORT_TOKEN, **only(file))


@pytest.fixture
def browser(server: ReceiverProcess, browsers: list[Browser]) -> Callable[[str], Browser]:
    def signed_in(token: str) -> Browser:
        browsers.append(Browser(server.url))
        assert browsers[-1].sign_in(token).status_code == 303
        return browsers[-1]

    return signed_in


def test_the_button_shows_the_answer_escaped_and_is_audited(
    browser: Callable[[str], Browser], server: ReceiverProcess, sink: AnsweringSink
) -> None:
    admin = browser(ADMIN_TOKEN)
    page = admin.get(PAGE).text
    assert 'action="/console/destinations/billing/ping"' in page
    assert "Send test event" in page

    shown = admin.post(f"{PAGE}/ping", csrf=admin.csrf(PAGE))
    assert shown.status_code == 200
    assert re.search(r'id="ping-answer"[^>]*>HTTP 503<', shown.text)
    assert re.search(r'id="ping-time">[0-9.]+ ms<', shown.text)
    # Escaped as the API shows it, then for HTML: no tag of the subscriber's reaches the page.
    body = '<script>alert("x")</script>\\x00\\xff & more'
    assert f'<pre id="ping-body">{escape(body)}</pre>' in shown.text
    assert "<script>alert" not in shown.text
    (pinged,) = sink.received
    assert pinged.verified is not None
    assert '"who":"console","what":"ping","destination":"billing"' in server.output()


def test_support_no_csrf_and_an_unknown_name_send_nothing(
    browser: Callable[[str], Browser], sink: AnsweringSink
) -> None:
    admin, support = browser(ADMIN_TOKEN), browser(SUPPORT_TOKEN)
    assert "Send test event" not in support.get(PAGE).text
    refused = {
        "support": support.post(f"{PAGE}/ping", csrf=support.csrf(PAGE)).status_code,
        "no csrf": admin.post(f"{PAGE}/ping", note="a form without the token").status_code,
        "wrong csrf": admin.post(f"{PAGE}/ping", csrf="not-the-token").status_code,
        "unknown": admin.post(
            "/console/destinations/nowhere/ping", csrf=admin.csrf(PAGE)
        ).status_code,
        "not a name": admin.post(
            "/console/destinations/%2E%2E/ping", csrf=admin.csrf(PAGE)
        ).status_code,
    }
    assert refused == {
        "support": 403,
        "no csrf": 403,
        "wrong csrf": 403,
        "unknown": 404,
        "not a name": 404,
    }
    assert sink.received == []
