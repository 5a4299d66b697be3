"""An action's notice, against a real server: it is shown only to the session whose action
made it, from a redirect signed with that session's own secret; a link anyone else makes
shows nothing, signed in or out, and neither the sign-in page nor an error page ever shows
one (the sign-in page told a stranger which destination names exist)."""

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from receiver.console.access import ADMIN, Session
from receiver.console.notices import answer_to, reprocessed_counts
from receiver.operators.actions import ReprocessCounts
from tests.conftest import Rivya
from tests.console.conftest import Browser
from tests.helpers import make_event, wait_until

NOTICE = re.compile(r'<p class="notice" role="status">(.*?)</p>', re.S)
REPLAYED = "Replayed 1 delivery: default 1."


@dataclass
class Notices:
    rivya: Rivya
    event: dict[str, Any]
    admin: Browser
    other_admin: Browser
    anonymous: Browser

    def replay(self, browser: Browser) -> str:
        """The address a real replay of the event answers with, from `browser`'s session."""
        done = browser.post(
            "/console/events/replay",
            csrf=browser.csrf(),
            event_id=quote(self.event["id"], safe=""),
        )
        assert done.status_code == 303, done.text[:300]
        return str(done.headers["location"])


def notice(browser: Browser, address: str) -> str | None:
    shown = browser.client.get(address)
    found = NOTICE.search(shown.text)
    return html.unescape(found[1]) if found else None


@pytest.fixture(scope="module")
def notices(rivya: Rivya) -> Iterator[Notices]:
    """One event delivered to `default`, two administrators' sessions and a signed-out
    browser."""
    event = make_event()
    assert rivya.send(event).json()["status"] == "accepted"
    wait_until(lambda: rivya.admin(f"/events/{event['id']}").json()["deliveries"], timeout=10)
    admin, other_admin, anonymous = (Browser(rivya.server.url) for _ in range(3))
    for browser in (admin, other_admin):
        assert browser.sign_in().status_code == 303
    yield Notices(rivya, event, admin, other_admin, anonymous)
    for browser in (admin, other_admin, anonymous):
        browser.client.close()


def test_a_real_actions_redirect_shows_its_counts_to_its_own_session(notices: Notices) -> None:
    address = notices.replay(notices.admin)
    assert "signed=" in address
    assert notice(notices.admin, address) == REPLAYED
    # Reloading shows the same notice (and acts no more: the redirect is a GET).
    assert notice(notices.admin, address) == REPLAYED


def test_a_reprocess_notice_says_how_many_retention_removed_meanwhile(notices: Notices) -> None:
    """The counts a reprocess's redirect carries, signed for the session as the action
    signs them, include `gone`, and the notice says it."""
    counts = ReprocessCounts({"applied": 1, "quarantined": 1}, changed=1, gone=1)
    session = Session("", ADMIN, notices.admin.csrf())
    address = answer_to(session, "/console/events", "reprocessed", reprocessed_counts(counts))
    assert notice(notices.admin, address) == (
        "Reprocessed 2 events: 1 changed outcome, 1 unchanged, 1 removed by retention meanwhile."
    )


def test_a_link_without_its_sessions_signature_shows_nothing_signed_in_or_out(
    notices: Notices,
) -> None:
    """Unsigned, signed wrongly, with a count changed, from another session, or signed out:
    no notice at all (it said "Done." or the forged numbers)."""
    signed = notices.replay(notices.admin)
    path, query = signed.split("?", 1)
    forged = [
        f"{path}?done=replayed&replayed=default%3A3",
        f"{path}?done=replayed&replayed=default%3A3&signed=00",
        f"{path}?done=reconciled",
        f"{path}?{query.replace('default%3A1', 'default%3A5')}",
        f"{path}?{query}&replayed=default%3A2",
        f"{path}?{query.replace('signed=', 'signed=0')}",
    ]
    for address in forged:
        assert notice(notices.admin, address) is None, address
    assert notice(notices.other_admin, signed) is None, "another session's link"
    for address in (signed, *forged):
        shown = notices.anonymous.client.get(address)
        assert shown.headers["location"] == "/console/login", "signed out: to sign-in"


def test_the_sign_in_page_and_error_pages_never_show_a_notice(notices: Notices) -> None:
    """The sign-in page answers the same for a configured destination's name and any
    other: it enumerated them ("Replayed ..." against "Done.")."""
    signed = notices.replay(notices.admin)
    query = urlsplit(signed).query
    configured, unknown = (
        # Without its CSRF token, which differs from one answer to the next.
        re.sub(r'value="[^"]+"', "", notices.anonymous.client.get(address).text)
        for address in (
            "/console/login?done=replayed&replayed=default%3A1",
            "/console/login?done=replayed&replayed=nowhere%3A1",
        )
    )
    assert NOTICE.search(configured) is None
    assert configured == unknown, "the same page whatever the name"
    assert notice(notices.anonymous, f"/console/login?{query}") is None
    # Signed in, its own signed notice stays off every error page.
    for address in (
        f"/console/events/evt_nowhere?{query}",
        f"/console/nowhere?{query}",
        f"/console/events?since=soonish&{query}",
    ):
        shown = notices.admin.client.get(address)
        assert shown.status_code in (400, 404), address
        assert NOTICE.search(shown.text) is None, address
