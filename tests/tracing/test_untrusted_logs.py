"""What an untrusted caller sends as trace context never reaches the logs: its `tracestate`
is not ours (it is neither the parent nor sent on), and OpenTelemetry's parser writes a
warning quoting any member it cannot read, so anyone able to reach the port, unsigned,
could put text of their choosing (kilobytes a request) into the service's log lines."""

import secrets

from tests.helpers import HTTP, ReceiverProcess, make_event, signed


def test_an_untrusted_callers_tracestate_text_reaches_no_log_line(
    server: ReceiverProcess, secrets_in_use: tuple[str, str]
) -> None:
    """A signed webhook, an unsigned one and a request to no route, each with a valid
    `traceparent` and a `tracestate` OpenTelemetry cannot read: answered as without them,
    and the text is in no line of the server's log."""
    marker = f"caller-text-{secrets.token_hex(8)}"
    trace_headers = {
        "traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
        "tracestate": f"{marker} {'x' * 2000}",
    }
    event = make_event()
    body, headers = signed(secrets_in_use[0], event)
    webhook = f"{server.url}/webhooks/rivya"
    assert HTTP.post(webhook, content=body, headers=headers | trace_headers).status_code == 200
    unsigned = {"content-type": "application/json", **trace_headers}
    assert HTTP.post(webhook, content=body, headers=unsigned).status_code == 401
    assert HTTP.get(f"{server.url}/nowhere", headers=trace_headers).status_code == 404
    assert marker not in server.output()
