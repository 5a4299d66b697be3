"""Delivery errors in words: the phrase for each stored class name and status, and the same
phrase on the console's pages and in the CLI for a destination that refuses connections."""

from collections.abc import Callable

import pytest

from receiver.forward.failures import describe_failure
from tests.conftest import Rivya
from tests.console.conftest import Browser
from tests.helpers import Operator, ReceiverProcess, free_port, make_event, wait_until


@pytest.mark.parametrize(
    ("error_class", "phrase"),
    [
        ("ClientConnectorError", "connection refused or host unreachable"),
        ("ConnectionRefusedError", "connection refused"),
        # Subclasses of ClientConnectorError, told apart by name before their parent.
        ("ClientConnectorDNSError", "name not resolved"),
        ("gaierror", "name not resolved"),
        ("ClientConnectorCertificateError", "TLS certificate rejected"),
        ("SSLCertVerificationError", "TLS certificate rejected"),
        ("ServerFingerprintMismatch", "TLS certificate rejected"),
        ("ClientConnectorSSLError", "TLS handshake failed"),
        ("ClientSSLError", "TLS handshake failed"),
        ("SSLError", "TLS handshake failed"),
        ("ClientProxyConnectionError", "proxy unreachable"),
        ("ClientHttpProxyError", "proxy refused the request"),
        ("ServerDisconnectedError", "server closed the connection without answering"),
        ("ClientConnectionResetError", "connection reset"),
        ("ConnectionResetError", "connection reset"),
        ("ClientOSError", "network error"),
        ("ClientConnectionError", "network error"),
        ("ServerConnectionError", "network error"),
        ("ClientPayloadError", "response body broken off"),
        ("ClientResponseError", "malformed HTTP response"),
        ("TooManyRedirects", "too many redirects"),
        ("InvalidURL", "invalid URL"),
        ("InvalidUrlClientError", "invalid URL"),
        ("NonHttpUrlClientError", "not an http or https URL"),
        ("orphaned", "destination no longer configured"),
        ("SomethingNewError", "request failed"),
    ],
)
def test_each_stored_class_name_reads_as_its_phrase(error_class: str, phrase: str) -> None:
    assert describe_failure(error_class) == phrase


@pytest.mark.parametrize(
    "error_class",
    ["TimeoutError", "ServerTimeoutError", "ConnectionTimeoutError", "SocketTimeoutError"],
)
def test_a_timeout_says_how_long_the_attempt_waited(error_class: str) -> None:
    assert describe_failure(error_class, None, 10_003.4) == "timed out after 10 s"
    assert describe_failure(error_class, None, 2_460.0) == "timed out after 2.5 s"
    # A delivery's summary has no duration: no number is made up.
    assert describe_failure(error_class) == "timed out"


@pytest.mark.parametrize(
    ("status_code", "phrase"),
    [(503, "HTTP 503"), (410, "HTTP 410"), (302, "HTTP 302"), (199, "HTTP 199"), (200, None)],
)
def test_a_status_outside_2xx_is_named_and_a_success_is_no_failure(
    status_code: int, phrase: str | None
) -> None:
    assert describe_failure(None, status_code) == phrase


def test_nothing_recorded_is_no_failure_and_the_class_wins_over_a_status() -> None:
    assert describe_failure(None) is None
    assert describe_failure("", None) is None
    assert describe_failure("ClientPayloadError", 200) == "response body broken off"


def test_a_refused_connection_reads_connection_refused_in_the_console_and_the_cli(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya
) -> None:
    """A real server forwarding to a loopback port nobody listens on: the attempts go dead,
    and the event's page, the dead-letter list and `receiver deliveries list` say
    "connection refused", with the class beside it."""
    closed = f"http://127.0.0.1:{free_port()}/hooks"
    server = start_server(forward_url=closed, forward_retry_schedule="0.1")
    sender, operator = Rivya(server, rivya.secret, rivya.sensitive), Operator(server)
    event = make_event()
    assert sender.send(event).status_code == 200
    wait_until(
        lambda: sender.admin("/deliveries?state=dead").json()["deliveries"] != [], timeout=20
    )

    browser = Browser(server.url)
    try:
        assert browser.sign_in().status_code == 303
        shown = browser.get(f"/console/events/{event['id']}").text
        assert shown.count("connection refused or host unreachable <code>ClientConnectorError")
        assert shown.count("<code>ClientConnectorError</code>") == 2  # both attempts
        dead = browser.get("/console/deliveries", state="dead").text
        assert "connection refused or host unreachable <code>ClientConnectorError" in dead
    finally:
        browser.client.close()

    listed = operator.run("deliveries", "list")
    assert "connection refused or host unreachable" in listed
    assert "ClientConnectorError" in listed
    attempts = operator.run("events", "show", event["id"])
    assert attempts.count("connection refused or host unreachable") == 2
    # Scripts keep the raw fields.
    (delivery,) = operator.json("deliveries", "list")["deliveries"]
    assert delivery["last_error"] == "ClientConnectorError"
