"""The console in a real browser: Debian's Chromium, headless, driven through Debian's
ChromeDriver by Selenium, against a real server and a real sink. Its screenshots of the
overview, the failed jobs and a recovered dead letter are the README's (`make screenshots`
writes them to docs/)."""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.conftest import ADMIN_TOKEN, Rivya, Sensitive
from tests.console.conftest import SUPPORT_TOKEN
from tests.helpers import Downstream, Received, ReceiverProcess, make_event, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def chromium() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the suite may run as root
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # No implicit waits: a page is loaded when `get` returns, and after a click the test
    # waits for what it expects (an absent element must not cost seconds).
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def sign_in(driver: WebDriver, base: str, token: str) -> None:
    driver.get(f"{base}/console/")
    assert driver.current_url == f"{base}/console/login"
    driver.find_element(By.NAME, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.signin button").click()
    wait_until(lambda: driver.current_url == f"{base}/console/", timeout=10)


def sign_out(driver: WebDriver, base: str) -> None:
    driver.find_element(By.CSS_SELECTOR, "form.signout button").click()
    wait_until(lambda: driver.current_url == f"{base}/console/login", timeout=10)


def screenshot(driver: WebDriver, folder: Path, name: str) -> None:
    path = folder / name
    driver.save_screenshot(str(path))
    assert path.read_bytes().startswith(PNG)
    assert path.stat().st_size > 20_000, "a page, not a blank"


def test_an_operator_and_a_support_person_use_the_console(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    chromium: WebDriver,
    tmp_path: Path,
) -> None:
    failing = [True]

    def respond(_: Received, __: int) -> tuple[int, dict[str, str]]:
        return (503, {}) if failing[0] else (200, {})

    sink = own_downstream(respond)
    server = start_server(
        support_token=SUPPORT_TOKEN, forward_url=sink.url, forward_retry_schedule="0.1"
    )
    rivya = Rivya(server, secrets_in_use[0], sensitive)
    succeeded = make_event()
    failed = make_event("generation.failed")
    failed["data"] |= {"model": "kling-video", "reserved_credits": 12, "final_credits": 0}
    failed["data"]["error"]["code"] = "content_policy_violation"
    for event in (succeeded, failed):
        assert rivya.send(event).json()["status"] == "accepted"
    wait_until(lambda: len(rivya.admin("/deliveries?state=dead").json()["deliveries"]) == 2, 20)
    base, driver = server.url, chromium
    shots = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)

    # Sign in; the event sent a moment ago is on the overview and the events page.
    sign_in(driver, base, ADMIN_TOKEN)
    assert driver.find_element(By.ID, "events-today").text == "2"
    moment = driver.find_element(By.CSS_SELECTOR, "figcaption time")
    assert (moment.get_attribute("title") or "").endswith("(UTC)")
    assert moment.text != moment.get_attribute("datetime"), "shown in the browser's zone"
    screenshot(driver, shots, "console-overview.png")
    driver.get(f"{base}/console/events")
    assert failed["id"] in driver.find_element(By.TAG_NAME, "table").text

    # A failed job: its error, and the credits it reserved and got back.
    driver.get(f"{base}/console/failed")
    assert "content_policy_violation" in driver.find_element(By.CSS_SELECTOR, "table.failed").text
    screenshot(driver, shots, "console-failed-jobs.png")
    driver.find_element(By.LINK_TEXT, failed["data"]["id"]).click()
    wait_until(lambda: "/console/records/" in driver.current_url, timeout=10)
    details = driver.find_element(By.CSS_SELECTOR, "dl.details").text
    assert "content_policy_violation" in details
    assert "reserved 12, final 0" in details

    # A filter the console cannot read: a page in the layout that names the field and what
    # it takes, and leads back to the list.
    driver.get(f"{base}/console/events?since=last+tuesday")
    assert driver.find_element(By.CSS_SELECTOR, ".error .problem").text.startswith("since: ")
    assert driver.find_element(By.TAG_NAME, "nav").is_displayed()
    screenshot(driver, shots, "console-error.png")
    driver.find_element(By.LINK_TEXT, "Back to events, without filters").click()
    wait_until(lambda: driver.current_url == f"{base}/console/events", timeout=10)

    # The destination comes back: its dead letters, replayed with its one action (from its
    # row on the overview, through a confirmation with the count), reach the sink and clear.
    failing[0] = False
    driver.get(f"{base}/console/")
    driver.find_element(By.LINK_TEXT, "Replay 2 dead letters").click()
    assert "2 dead letters to default" in driver.find_element(By.ID, "planned").text
    driver.find_element(By.CSS_SELECTOR, "form.confirm button").click()
    wait_until(lambda: bool(driver.find_elements(By.CSS_SELECTOR, ".notice")), timeout=10)
    notice = driver.find_element(By.CSS_SELECTOR, ".notice").text
    assert notice == "Replayed 2 deliveries: default 2."
    assert driver.current_url.startswith(f"{base}/console/destinations/default?")
    sent_again = [succeeded["id"], failed["id"]]
    wait_until(lambda: all(sink.ids().count(e) == 3 for e in sent_again), timeout=20)
    driver.get(f"{base}/console/destinations/default?state=dead")
    assert "No dead letters to default." in driver.find_element(By.TAG_NAME, "main").text

    # The event's page tells its story: dead, now recovered, then delivered.
    def story() -> list[str]:
        driver.get(f"{base}/console/events/{failed['id']}")
        return [s.text for s in driver.find_elements(By.CSS_SELECTOR, ".delivery h4 .state")]

    wait_until(lambda: story() == ["recovered", "delivered"], timeout=10, what=lambda: str(story()))
    driver.get(f"{base}/console/events/{failed['id']}#deliveries")
    screenshot(driver, shots, "console-recovered.png")
    sign_out(driver, base)

    # Support sees every page and no action; a forged one is refused by the server.
    sign_in(driver, base, SUPPORT_TOKEN)
    for path in ("/console/failed", "/console/deliveries", f"/console/events/{succeeded['id']}"):
        driver.get(base + path)
        assert driver.find_elements(By.CSS_SELECTOR, "form.action, form.inline") == []
    csrf = driver.find_element(By.NAME, "csrf").get_attribute("value")
    driver.execute_script(
        "const form = document.createElement('form');"
        "form.method = 'post'; form.action = arguments[0];"
        "const field = document.createElement('input');"
        "field.name = 'csrf'; field.value = arguments[1];"
        "form.appendChild(field); document.body.appendChild(form); form.submit();",
        "/console/events/replay",
        csrf,
    )
    wait_until(lambda: "can read, not act" in driver.page_source, timeout=10)
    assert sink.ids().count(succeeded["id"]) == 3, "no replay happened"
    driver.get(f"{base}/console/")
    sign_out(driver, base)
