"""Every form the console shows, found by crawling its pages as an administrator and as
support, posted with generated values (Hypothesis): no answer is a 5xx, and without a
valid CSRF token (or, for support, without the right to act) nothing changes: not a row of
the database, not an audit line."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import sqlalchemy as sa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_TOKEN, Rivya, Sensitive
from tests.console.conftest import SUPPORT_TOKEN, Browser
from tests.databases import reading
from tests.fake_rivya import FakeRivya
from tests.helpers import ReceiverProcess, make_event, wait_until
from tests.reconcile.conftest import reconciling, serve_fake_rivya

# Per form, role and kind of token. 15 gives each field its edge values (empty, NUL,
# non-ASCII, long, the page's own values) and keeps the module near half a minute a backend.
EXAMPLES = 15
# Pages the crawl reads at most: every kind of page, a few of each, and their forms.
MAX_PAGES = 40
ROLES = {"admin": ADMIN_TOKEN, "support": SUPPORT_TOKEN}
# What a POST can change: every table an action writes, and the sessions sign-in and
# sign-out write. (The forwarder and the reconciler write too: the test waits them out.)
SNAPSHOT = (
    "SELECT id, outcome, quarantine_reason FROM events ORDER BY id",
    "SELECT * FROM records ORDER BY task_id",
    "SELECT id, event_id, destination, state, attempts FROM deliveries ORDER BY id",
    "SELECT count(*) FROM attempts",
    "SELECT id_hash, role FROM console_sessions ORDER BY id_hash",
)
AUDIT_BY_CONSOLE = '"who":"console"'
# Values past the edges that random text reaches too rarely in a bounded run: NUL (which
# PostgreSQL refuses in any text), path tricks, times UTC cannot hold, a huge span.
EDGES = ["\x00", "a\x00b", "..", "%2e%2e", "a/b", "9999-12-31T23:59:59-01:00", "999999w"]


@dataclass
class Form:
    method: str
    action: str
    # Each field's name and the values the page offers for it (an input's, a select's options)
    fields: dict[str, list[str]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, tuple[str, ...]]:
        return self.method, self.action, tuple(sorted(self.fields))


class PageReader(HTMLParser):
    """The links and forms of one page, as a browser without script sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._select: str | None = None
        self._option: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "a" and "href" in found:
            self.links.append(found["href"])
        elif tag == "form":
            self._form = Form(found.get("method", "get").lower(), found.get("action", ""))
            self.forms.append(self._form)
        elif self._form is not None and tag in ("input", "textarea", "button") and "name" in found:
            self._form.fields.setdefault(found["name"], []).append(found.get("value", ""))
        elif self._form is not None and tag == "select" and "name" in found:
            self._select = found["name"]
            self._form.fields.setdefault(self._select, [])
        elif self._select is not None and tag == "option":
            self._option = [found["value"]] if "value" in found else []

    def handle_data(self, data: str) -> None:
        if self._option is not None and not self._option:
            self._option.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "option" and self._option is not None and self._form and self._select:
            self._form.fields[self._select].append(self._option[0] if self._option else "")
            self._option = None
        elif tag == "select":
            self._select = None
        elif tag == "form":
            self._form = None


def crawl(browser: Browser, start: str = "/console/") -> list[Form]:
    """Every distinct form on the pages reachable from `start` by links under /console/,
    and by submitting each GET form as the page fills it."""
    queue, seen = [start], set[str]()
    forms: dict[tuple[str, str, tuple[str, ...]], Form] = {}
    while queue and len(seen) < MAX_PAGES:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        response = browser.client.get(path)
        assert response.status_code < 500, (path, response.status_code)
        if "text/html" not in response.headers.get("content-type", ""):
            continue
        reader = PageReader()
        reader.feed(response.text)
        for form in reader.forms:
            forms.setdefault(form.key, form)
            if form.method == "get":
                query = "&".join(f"{name}={values[0]}" for name, values in form.fields.items())
                queue.append(f"{form.action}?{query}" if query else form.action)
        for href in reader.links:
            target = urljoin(path, href)
            if urlsplit(target).path.startswith("/console/") and "/static/" not in target:
                queue.append(target)
    return list(forms.values())


def snapshot(database_url: str) -> list[list[Any]]:
    with reading(database_url) as connection:
        return [[tuple(row) for row in connection.execute(sa.text(q))] for q in SNAPSHOT]


def values(form: Form, csrf: st.SearchStrategy[str | None]) -> st.SearchStrategy[dict[str, str]]:
    """Each field left out, given one of the page's own values, or any text; `csrf` as told."""
    chosen = {
        name: st.none()
        | st.sampled_from(offered or [""])
        | st.sampled_from(EDGES)
        | st.text(max_size=300)
        for name, offered in form.fields.items()
        if name != "csrf"
    }
    return st.fixed_dictionaries({**chosen, "csrf": csrf}).map(
        lambda drawn: {name: value for name, value in drawn.items() if value is not None}
    )


BOUNDED = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None)


def fuzz(
    form: Form,
    fillings: st.SearchStrategy[dict[str, str]],
    send: Callable[[Form, dict[str, str]], int],
) -> None:
    """EXAMPLES fillings of `form`, each sent, and before them each edge in each field (the
    others as the page fills them, no CSRF token but what `send` adds): not one answered
    with a 5xx. (Drawn, an edge reached a given field too rarely: a 500 for an event ID
    holding a slash went unseen.)"""

    @BOUNDED
    @given(filled=fillings)
    def attempt(filled: dict[str, str]) -> None:
        status = send(form, filled)
        assert status < 500, (form.method, form.action, filled, status)

    as_shown = {name: offered[0] for name, offered in form.fields.items() if offered}
    as_shown.pop("csrf", None)
    for name in sorted(form.fields.keys() - {"csrf"}):
        for edge in EDGES:
            attempt = example(filled={**as_shown, name: edge})(attempt)
    attempt()


@pytest.fixture(scope="module")
def module_rivya_api(sensitive: Sensitive) -> Iterator[FakeRivya]:
    """Rivya's API for the module's server: "Ask Rivya" is offered only with a key."""
    yield from serve_fake_rivya(sensitive)


@pytest.fixture(scope="module")
def server_env(server_env: dict[str, str], module_rivya_api: FakeRivya) -> dict[str, str]:
    asking = reconciling(module_rivya_api, reconcile_after_seconds="3600")
    return {
        **server_env,
        "RECEIVER_SUPPORT_TOKEN": SUPPORT_TOKEN,
        **{f"RECEIVER_{name.upper()}": value for name, value in asking.items()},
    }


@pytest.fixture(scope="module")
def signed_in(server: ReceiverProcess, rivya: Rivya) -> Iterator[Callable[[str], Browser]]:
    """Browsers signed in by role, over a database with events of each outcome (so that
    each page has its forms); made once, and again if a test signs one out."""
    for event in (make_event(), make_event("generation.failed"), make_event("model.unknown")):
        assert rivya.send(event).status_code == 200
    assert rivya.send({"id": "evt_odd", "type": "generation.succeeded"}).status_code == 200
    made: dict[str, Browser] = {}

    def browser(role: str) -> Browser:
        if role not in made or made[role].get("/console/").status_code != 200:
            if role in made:
                made[role].client.close()
            made[role] = Browser(server.url)
            assert made[role].sign_in(ROLES[role]).status_code == 303
        return made[role]

    yield browser
    for each in made.values():
        each.client.close()


@pytest.fixture(scope="module")
def forms(signed_in: Callable[[str], Browser]) -> dict[str, list[Form]]:
    found = {role: crawl(signed_in(role)) for role in ROLES}
    actions = {form.action for form in found["admin"] if form.method == "post"}
    # The crawl reaches every action an administrator has, and sign-out and the filters.
    assert {
        "/console/logout",
        "/console/events/replay",
        "/console/replay",
        "/console/reprocess",
        "/console/records/reconcile",
    } <= actions
    # Support is shown no action, and is tried on each anyway: a hidden form guards nothing.
    shown = {form.key for form in found["support"]}
    found["support"] += [form for form in found["admin"] if form.key not in shown]
    anonymous = Browser(str(signed_in("admin").client.base_url))
    found["anonymous"] = crawl(anonymous, "/console/login")
    anonymous.client.close()
    assert [form.action for form in found["anonymous"]] == ["/console/login"]
    return found


def quiet(server: ReceiverProcess, server_env: dict[str, str]) -> None:
    """No delivery left to attempt: what the forwarder would change is changed."""

    def settled() -> bool:
        with reading(server_env["RECEIVER_DATABASE_URL"]) as connection:
            pending = connection.execute(
                sa.text("SELECT count(*) FROM deliveries WHERE state = 'pending'")
            ).scalar_one()
        return bool(pending == 0)

    wait_until(settled, timeout=30, what="deliveries settled")


def send(browser: Browser, form: Form, data: dict[str, str]) -> int:
    if form.method == "get":
        return browser.client.get(form.action, params=data).status_code
    return browser.client.post(form.action, data=data).status_code


# The refusals below are made before any store is reached, from the session the cookie
# names: a generated value never meets a database, so one backend proves them. (What the
# database makes of generated values is proved on both, by the 5xx test at the end.)
@pytest.mark.any_backend
@pytest.mark.parametrize("role", ["admin", "support", "anonymous"])
def test_without_a_valid_csrf_token_no_form_changes_anything(
    role: str,
    forms: dict[str, list[Form]],
    signed_in: Callable[[str], Browser],
    server: ReceiverProcess,
    server_env: dict[str, str],
) -> None:
    quiet(server, server_env)
    database_url = server_env["RECEIVER_DATABASE_URL"]
    before, audited = snapshot(database_url), server.output().count(AUDIT_BY_CONSOLE)
    tried = 0
    for form in forms[role]:
        browser = Browser(server.url) if role == "anonymous" else signed_in(role)
        wrong = st.none() | st.sampled_from(EDGES) | st.text(max_size=100)
        fuzz(form, values(form, wrong), partial(send, browser))
        tried += 1
        if role == "anonymous":
            browser.client.close()
    assert tried
    assert snapshot(database_url) == before
    assert server.output().count(AUDIT_BY_CONSOLE) == audited


@pytest.mark.any_backend
def test_support_with_its_own_csrf_token_changes_nothing(
    forms: dict[str, list[Form]],
    signed_in: Callable[[str], Browser],
    server: ReceiverProcess,
    server_env: dict[str, str],
) -> None:
    """Support can read every page and act on none: its forms, with its real token, are
    refused as they are for anyone else (sign-out, which ends its own session, aside)."""
    quiet(server, server_env)
    database_url = server_env["RECEIVER_DATABASE_URL"]
    before, audited = snapshot(database_url), server.output().count(AUDIT_BY_CONSOLE)
    for form in forms["support"]:
        if form.action == "/console/logout":
            continue
        browser = signed_in("support")
        fuzz(form, values(form, st.just(browser.csrf())), partial(send, browser))
    assert snapshot(database_url) == before
    assert server.output().count(AUDIT_BY_CONSOLE) == audited


@pytest.mark.parametrize("role", ["admin", "support"])
def test_no_generated_form_is_answered_with_a_5xx(
    role: str,
    forms: dict[str, list[Form]],
    signed_in: Callable[[str], Browser],
    server: ReceiverProcess,
) -> None:
    """With the session's own CSRF token: whatever else the fields hold, a 2xx, 3xx or 4xx
    (and the administrator's fillings reach the actions: they write audit lines)."""
    audited = server.output().count(AUDIT_BY_CONSOLE)

    def send_as(form: Form, data: dict[str, str]) -> int:
        browser = signed_in(role)  # again: a sign-out example ends the session
        return send(browser, form, {**data, "csrf": browser.csrf()})

    for form in forms[role]:
        fuzz(form, values(form, st.just("")), send_as)
    if role == "admin":
        assert server.output().count(AUDIT_BY_CONSOLE) > audited
