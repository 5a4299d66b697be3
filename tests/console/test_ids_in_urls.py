"""IDs are any text: every one the console puts in a URL is one encoded path segment, and
every action carries its ID in its form. Pages are rendered for events and records whose
IDs are dot-segments, slashes, escapes and URL delimiters; each link and each form is
resolved as RFC 3986 resolves a reference against its page, and followed."""

from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import unquote, urljoin, urlsplit

import pytest

from receiver.console.rendering import segment
from tests.conftest import Rivya, Sensitive
from tests.console.conftest import Browser
from tests.helpers import Downstream, Received, ReceiverProcess, make_event, wait_until

AWKWARD_IDS = ("..", ".", "a/b", "%2e%2e", "a?b#c", "../replay")
ACTIONS = ("/console/events/replay", "/console/records/reconcile")
FAILURES = 3  # attempts per delivery: the first and the two of the retry schedule


class Page(HTMLParser):
    """The links and the POST forms (action, fields) of a page, attributes unescaped."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.links: list[str] = []
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "a" and "href" in found:
            self.links.append(found["href"])
        elif tag == "form" and found.get("method") == "post":
            self.forms.append((found["action"], {}))
        elif tag == "input" and self.forms and found.get("type") == "hidden":
            self.forms[-1][1][found["name"]] = found.get("value", "")


def actions(page: Page) -> list[tuple[str, dict[str, str]]]:
    return [(action, fields) for action, fields in page.forms if action != "/console/logout"]


def path_of(base: str, reference: str) -> str:
    """The decoded path `reference` leads to from the page at `base` (RFC 3986 section 5)."""
    return unquote(urlsplit(urljoin(base, reference)).path)


def test_segment_encodes_an_id_as_one_segment_that_decodes_back() -> None:
    assert segment("..") == "%2E%2E"
    assert segment(".") == "%2E"
    assert segment("a/b") == "a%2Fb"
    assert segment("a?b#c") == "a%3Fb%23c"
    assert segment("%2e%2e") == "%252e%252e"
    assert segment("evt_1.v2-x~") == "evt_1.v2-x~", "unreserved characters stay as they are"
    for value in (*AWKWARD_IDS, "...", "é ü", "a\nb"):
        encoded = segment(value)
        assert "/" not in encoded
        assert encoded.strip(".")
        assert unquote(encoded) == value


def failing_three_times(_: Received, earlier: int) -> tuple[int, dict[str, str]]:
    return (500 if earlier < FAILURES else 200), {}


@pytest.fixture
def dead_letters(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
) -> tuple[Rivya, Downstream]:
    """A server whose every event's delivery is dead after three attempts (its downstream
    takes an event the fourth time), one event and one record per awkward ID."""
    sink = own_downstream(failing_three_times)
    server = start_server(forward_url=sink.url)
    rivya = Rivya(server, secrets_in_use[0], sensitive)
    for awkward in AWKWARD_IDS:
        assert rivya.send(make_event(event_id=awkward, task_id=awkward)).status_code == 200

    def all_dead() -> bool:
        dead = rivya.admin("/deliveries", params={"state": "dead", "limit": "100"}).json()
        return len(dead["deliveries"]) == len(AWKWARD_IDS)

    wait_until(all_dead, timeout=30, what="every delivery dead")
    return rivya, sink


def test_links_and_forms_of_awkward_ids_lead_to_their_own_pages_and_actions(
    dead_letters: tuple[Rivya, Downstream], browsers: list[Browser]
) -> None:
    rivya, sink = dead_letters
    admin = Browser(rivya.server.url)
    browsers.append(admin)
    assert admin.sign_in().status_code == 303
    base = rivya.server.url
    dead_page = f"{base}/console/deliveries?state=dead"
    listed = Page(admin.get("/console/deliveries", state="dead").text)
    event_links = {
        path_of(dead_page, link).removeprefix("/console/events/")
        for link in listed.links
        if path_of(dead_page, link).startswith("/console/events/")
    }
    assert event_links == set(AWKWARD_IDS)
    replays = {fields["event_id"]: (action, fields) for action, fields in actions(listed)}
    assert {unquote(encoded) for encoded in replays} == set(AWKWARD_IDS)

    for awkward in AWKWARD_IDS:
        for kind, other_kind, field in (
            ("events", "records", "event_id"),
            ("records", "events", "task_id"),
        ):
            page_url = f"{base}/console/{kind}/{segment(awkward)}"
            response = admin.client.get(page_url)
            assert response.status_code == 200, (kind, awkward)
            page = Page(response.text)
            linked = {path_of(page_url, link) for link in page.links}
            assert f"/console/{other_kind}/{awkward}" in linked, (kind, awkward)
            ((action, fields),) = actions(page)
            assert path_of(page_url, action) in ACTIONS
            assert unquote(fields[field]) == awkward

    # The dead letter of `..` replayed from its row: that event alone is sent again.
    action, fields = replays[segment("..")]
    assert path_of(dead_page, action) == "/console/events/replay"
    done = admin.client.post(urljoin(dead_page, action), data=fields)
    assert done.status_code == 303
    assert path_of(dead_page, done.headers["location"]) == "/console/events/.."
    wait_until(lambda: len(sink.of("..")) == FAILURES + 1, timeout=20, what="the replay")
    for other in AWKWARD_IDS[1:]:
        assert len(sink.of(other)) == FAILURES, f"{other!r} was replayed too"
    delivered = rivya.admin("/deliveries", params={"state": "delivered"}).json()
    assert [d["event_id"] for d in delivered["deliveries"]] == [".."]
