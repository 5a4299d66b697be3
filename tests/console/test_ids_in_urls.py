"""IDs are any text: every one the console puts in a URL reaches that ID's page in a
browser, and every action carries its ID in its form. Pages are rendered for events and
records whose IDs are dot-segments, slashes, escapes and URL delimiters; each link and each
form is resolved as a browser resolves it (the WHATWG URL standard, which reads `%2E` as a
dot), and followed."""

import html
import re
from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import unquote, urljoin, urlsplit

import pytest

from receiver.console.rendering import page_of, segment
from tests.conftest import Rivya, Sensitive
from tests.console.conftest import Browser
from tests.fake_rivya import FakeRivya
from tests.helpers import Downstream, Received, ReceiverProcess, make_event, wait_until
from tests.reconcile.conftest import reconciling

AWKWARD_IDS = ("..", ".", "a/b", "%2e%2e", "a?b#c", "../replay")
ACTIONS = ("/console/events/replay", "/console/records/reconcile")
FAILURES = 3  # attempts per delivery: the first and the two of the retry schedule
HEADING = re.compile(r"<h1>(Event|Record) <code>(.*?)</code></h1>", re.DOTALL)
# The WHATWG URL standard's single- and double-dot path segments (section 4.1), compared
# without regard to case.
SINGLE_DOT = {".", "%2e"}
DOUBLE_DOT = {"..", ".%2e", "%2e.", "%2e%2e"}


def resolve(base: str, reference: str) -> str:
    """`reference` resolved against the http(s) URL `base` as a browser does: tabs and
    newlines dropped, `\\` read as `/` in the path, and a path segment that is a dot-segment
    in any spelling (`%2E%2E` too) removed as RFC 3986 removes `..`. `base` is one that
    this function gave, so it holds no dot-segment itself."""
    reference = re.sub(r"[\t\n\r]", "", reference).strip(" ")
    ends = [at for at in (reference.find("?"), reference.find("#")) if at >= 0]
    end = min(ends, default=len(reference))
    path, rest = reference[:end], reference[end:]
    segments = path.replace("\\", "/").split("/")
    spelled = [
        "." if s.lower() in SINGLE_DOT else ".." if s.lower() in DOUBLE_DOT else s for s in segments
    ]
    return urljoin(base, "/".join(spelled) + rest)


class Page(HTMLParser):
    """The links (address, text) and the POST forms (action, fields) of a page, attributes
    unescaped."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.forms: list[tuple[str, dict[str, str]]] = []
        self._href: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "a" and "href" in found:
            self._href = found["href"]
            self.links.append((self._href, ""))
        elif tag == "form" and found.get("method") == "post":
            self.forms.append((found["action"], {}))
        elif tag == "input" and self.forms and found.get("type") == "hidden":
            self.forms[-1][1][found["name"]] = found.get("value", "")

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            href, text = self.links[-1]
            self.links[-1] = (href, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._href = None


def actions(page: Page) -> list[tuple[str, dict[str, str]]]:
    return [(action, fields) for action, fields in page.forms if action != "/console/logout"]


def named(text: str) -> tuple[str, str] | None:
    """What a page is of: ("Event" or "Record", its ID), from its heading."""
    found = HEADING.search(text)
    return (found[1], html.unescape(found[2])) if found else None


def test_the_resolver_reads_escaped_dots_as_a_browser_does() -> None:
    """The flaw the links avoid: a browser takes /console/events/%2E%2E to /console/."""
    base = "http://h/console/deliveries?state=dead"
    assert resolve(base, "/console/events/%2E%2E") == "http://h/console/"
    assert resolve(base, "/console/events/.%2e/x") == "http://h/console/x"
    assert resolve(base, "/console/events/%2E") == "http://h/console/events/"
    assert resolve(base, "/console/events/%252E%252E") == "http://h/console/events/%252E%252E"
    assert resolve(base, "/console/event?id=..") == "http://h/console/event?id=.."
    assert resolve(base, "x\\%2e%2e\\y") == "http://h/console/y"


def test_segment_encodes_an_id_as_one_segment_that_decodes_back() -> None:
    assert segment("a/b") == "a%2Fb"
    assert segment("a?b#c") == "a%3Fb%23c"
    assert segment("%2e%2e") == "%252e%252e"
    assert segment("evt_1.v2-x~") == "evt_1.v2-x~", "unreserved characters stay as they are"
    for value in (*AWKWARD_IDS, "...", "é ü", "a\nb"):
        assert "/" not in segment(value)
        assert unquote(segment(value)) == value


@pytest.mark.parametrize("value", [*AWKWARD_IDS, "...", "", "%2E", ".%2e", "a\\b", "é ü"])
@pytest.mark.parametrize("kind", ["event", "record"])
def test_page_of_gives_an_address_a_browser_keeps(value: str, kind: str) -> None:
    """Resolved as a browser does, the address is the ID's page route with the ID whole:
    in the path, or in `?id=` when the ID is made only of dots."""
    address = urlsplit(resolve("http://h/console/", page_of(value, kind)))  # type: ignore[arg-type]
    if value.strip("."):
        assert unquote(address.path) == f"/console/{kind}s/{value}"
    else:
        assert (address.path, unquote(address.query)) == (f"/console/{kind}", f"id={value}")


def failing_three_times(_: Received, earlier: int) -> tuple[int, dict[str, str]]:
    return (500 if earlier < FAILURES else 200), {}


@pytest.fixture
def dead_letters(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    fake_rivya: FakeRivya,
) -> tuple[Rivya, Downstream]:
    """A server whose every event's delivery is dead after three attempts (its downstream
    takes an event the fourth time), one event and one record per awkward ID. It has a Rivya
    API key, so that a record's page offers its action ("Ask Rivya") too."""
    sink = own_downstream(failing_three_times)
    server = start_server(
        forward_url=sink.url, **reconciling(fake_rivya, reconcile_after_seconds="3600")
    )
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
    """Every link named by an awkward ID, on the listings and on the pages they lead to,
    lands (as a browser resolves it) on a page of that ID; every event and record page is
    reached so; each page's action posts its ID to a fixed route."""
    rivya, sink = dead_letters
    admin = Browser(rivya.server.url)
    browsers.append(admin)
    assert admin.sign_in().status_code == 303
    base = rivya.server.url
    dead_page = f"{base}/console/deliveries?state=dead"
    to_read = [dead_page, f"{base}/console/events", f"{base}/console/records"]
    read: set[str] = set()
    reached: set[tuple[str, str]] = set()
    while to_read:
        page_url = to_read.pop()
        if page_url in read:
            continue
        read.add(page_url)
        response = admin.client.get(page_url)
        assert response.status_code == 200, page_url
        page = Page(response.text)
        shown = named(response.text)
        if shown is not None:
            kind, shown_id = shown
            ((action, fields),) = actions(page)
            assert urlsplit(resolve(page_url, action)).path in ACTIONS
            field = "event_id" if kind == "Event" else "task_id"
            assert unquote(fields[field]) == shown_id
        for href, text in page.links:
            if text in AWKWARD_IDS:
                target = resolve(page_url, href)
                landed = admin.client.get(target)
                assert landed.status_code == 200, (page_url, href, target)
                landed_on = named(landed.text)
                assert landed_on is not None, (page_url, href, target)
                assert landed_on[1] == text, (page_url, href, target)
                reached.add(landed_on)
                to_read.append(target)
    assert reached == {(kind, i) for kind in ("Event", "Record") for i in AWKWARD_IDS}

    # Each dead letter's row posts its own delivery ID: which event each one is, by the API.
    dead = rivya.admin("/deliveries", params={"state": "dead"}).json()["deliveries"]
    event_of = {str(d["id"]): d["event_id"] for d in dead}
    listed = Page(admin.get("/console/deliveries", state="dead").text)
    replays = {
        event_of[fields["delivery_id"]]: (action, fields) for action, fields in actions(listed)
    }
    assert set(replays) == set(AWKWARD_IDS)

    # The dead letter of `..` replayed from its row: that event alone is sent again, and
    # the answer leads back to its destination's page.
    action, fields = replays[".."]
    assert urlsplit(resolve(dead_page, action)).path == "/console/destinations/default/replay"
    done = admin.client.post(resolve(dead_page, action), data=fields)
    assert done.status_code == 303
    back = admin.client.get(resolve(dead_page, done.headers["location"]))
    assert back.status_code == 200
    assert urlsplit(resolve(dead_page, done.headers["location"])).path == (
        "/console/destinations/default"
    )
    wait_until(lambda: len(sink.of("..")) == FAILURES + 1, timeout=20, what="the replay")
    for other in AWKWARD_IDS[1:]:
        assert len(sink.of(other)) == FAILURES, f"{other!r} was replayed too"

    # The sink answers before the forwarder writes the outcome: wait for the row too.
    def delivered() -> list[str]:
        listed = rivya.admin("/deliveries", params={"state": "delivered"}).json()
        return [d["event_id"] for d in listed["deliveries"]]

    wait_until(lambda: delivered() == [".."], timeout=20, what="the replay's outcome")
