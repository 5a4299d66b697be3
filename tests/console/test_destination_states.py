"""Disabling and enabling a destination from the console, over HTTP against a real server:
an administrator confirms each (a disable with its reason), lands on the destination's page
with a notice, sees it disabled (when, by whom, why) and its waiting deliveries in their own
tab; a support sign-in, a form without the session's CSRF token, a signed-out browser, a bad
reason and an unknown name are refused, changing nothing; each change is audited."""

import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from receiver.store.destination_states import MAX_REASON_CHARS
from tests.conftest import ADMIN_TOKEN, Rivya
from tests.console.conftest import CSRF, SUPPORT_TOKEN, Browser
from tests.console.test_recovery import main_of, notice, text_of
from tests.helpers import Downstream, ReceiverProcess, make_event, wait_until, write_destinations
from tests.test_metrics import QUICK

PAGE = "/console/destinations/billing"


class Console:
    def __init__(self, server: ReceiverProcess, billing: Downstream, browsers: list[Browser]):
        self.server, self.billing, self.browsers = server, billing, browsers

    def browser(self, token: str | None = None) -> Browser:
        self.browsers.append(Browser(self.server.url))
        if token is not None:
            assert self.browsers[-1].sign_in(token).status_code == 303
        return self.browsers[-1]

    def audits(self) -> list[tuple[str, str, int]]:
        lines = [orjson.loads(line) for line in self.server.output().splitlines()]
        return [
            (line["what"], line["who"], line["count"])
            for line in lines
            if line["event"] == "audit" and "destination" in line.get("what", "")
        ]


@pytest.fixture
def console(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    browsers: list[Browser],
    tmp_path: Path,
) -> Console:
    billing = own_downstream()
    table = {"name": "billing", "url": billing.url, "signing_secrets": new_secrets()}
    server = start_server(
        support_token=SUPPORT_TOKEN,
        destinations_file=write_destinations(tmp_path / "d.toml", table),
        metrics_refresh_seconds=QUICK,
    )
    return Console(server, billing, browsers)


def form_token(browser: Browser, path: str) -> str:
    found = CSRF.search(main_of(browser.get(path).text))
    assert found, f"no form on {path}"
    return found[1]


def test_an_administrator_disables_with_a_reason_and_enables_each_after_a_confirmation(
    console: Console, rivya: Rivya
) -> None:
    admin = console.browser(ADMIN_TOKEN)
    page = admin.get(PAGE).text
    assert '<a class="button" id="disable" href="/console/destinations/billing/disable">' in page
    asked = admin.get(f"{PAGE}/disable")
    assert asked.status_code == 200
    assert "No replica starts an attempt to billing until it is enabled again" in text_of(
        asked.text
    )
    assert f'name="reason" maxlength="{MAX_REASON_CHARS}"' in asked.text
    token = form_token(admin, f"{PAGE}/disable")
    done = admin.post(f"{PAGE}/disable", csrf=token, reason="moving <to> v2")
    assert done.status_code == 303
    assert done.headers["location"].startswith(f"{PAGE}?done=disabled&signed=")
    landed = admin.client.get(done.headers["location"]).text
    assert notice(landed) == "Disabled: nothing is sent to it until it is enabled."
    shown = text_of(landed)
    assert "disabled since" in shown
    assert "by console: moving <to> v2; nothing is sent to it until it is enabled" in shown
    assert "moving &lt;to&gt; v2" in landed, "the reason is escaped"
    assert '<a class="button" id="enable" href="/console/destinations/billing/enable">' in landed

    event = make_event()
    assert Rivya(console.server, rivya.secret, rivya.sensitive).send(event).status_code == 200
    wait_until(
        lambda: event["id"] in admin.get(PAGE, state="disabled").text,
        timeout=10,
        what="the disabled tab",
    )
    assert console.billing.received == []
    wait_until(
        lambda: '<span class="disabled">disabled</span> by console' in admin.get("/console/").text,
        timeout=10,
        what="the overview",
    )

    again = admin.post(f"{PAGE}/disable", csrf=token, reason="other")
    assert again.headers["location"].startswith(f"{PAGE}?done=unchanged&signed=")
    token = form_token(admin, f"{PAGE}/enable")
    assert 'name="reason"' not in admin.get(f"{PAGE}/enable").text, "an enable has no reason"
    enabled = admin.post(f"{PAGE}/enable", csrf=token)
    assert enabled.headers["location"].startswith(f"{PAGE}?done=enabled&signed=")
    landed = admin.client.get(enabled.headers["location"]).text
    assert notice(landed) == "Enabled: its pending deliveries are sent again."
    wait_until(lambda: console.billing.ids() == [event["id"]], timeout=10, what="sent")
    assert console.audits() == [
        ("disable_destination", "console", 1),
        ("disable_destination", "console", 0),
        ("enable_destination", "console", 1),
    ]


def test_support_no_csrf_signed_out_bad_reason_and_unknown_name_are_refused_changing_nothing(
    console: Console,
) -> None:
    support = console.browser(SUPPORT_TOKEN)
    assert 'id="disable"' not in support.get(PAGE).text, "no button for a support sign-in"
    support_token = CSRF.search(support.get("/console/").text)
    assert support_token
    for action in ("disable", "enable"):
        refused = support.post(f"{PAGE}/{action}", csrf=support_token[1])
        assert refused.status_code == 403
        assert "Your sign-in can read, not act" in refused.text
    admin = console.browser(ADMIN_TOKEN)
    assert admin.post(f"{PAGE}/disable", reason="no token").status_code == 403
    assert admin.post(f"{PAGE}/disable", csrf="forged").status_code == 403
    assert console.browser().post(f"{PAGE}/disable", reason="signed out").status_code == 403
    token = form_token(admin, f"{PAGE}/disable")
    for reason in ("x" * (MAX_REASON_CHARS + 1), "two\nlines"):
        assert admin.post(f"{PAGE}/disable", csrf=token, reason=reason).status_code == 400
    for path in ("/console/destinations/nope/disable", "/console/destinations/..%2Fx/disable"):
        assert admin.get(path).status_code == 404
        assert admin.post(path, csrf=token).status_code == 404
    time.sleep(0.5)
    assert "disabled since" not in text_of(admin.get(PAGE).text)
    assert console.audits() == []
