"""Every kind of traffic, at the most verbose log level: the output names what happened and
never carries a secret, token, signature, raw body, result URL or payload error message.

(Every other server the suite starts is scanned the same way when it stops.)"""

import json
from collections.abc import Callable

from tests.conftest import Rivya
from tests.helpers import HTTP, ReceiverProcess, make_event, sign, signed


def test_debug_logs_of_all_traffic_hold_no_sensitive_value(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya
) -> None:
    process = start_server(log_level="debug")
    sender = Rivya(process, rivya.secret, rivya.sensitive)
    succeeded, failed = make_event(), make_event("generation.failed")
    sender.send(succeeded)
    sender.send(succeeded)
    sender.send(failed)
    body, headers = signed(rivya.secret, make_event())
    sender.post(
        body, headers | {"webhook-signature": "v1," + headers["webhook-signature"][3:][::-1]}
    )
    sender.post(b"[1, 2]", sign(rivya.secret, b"[1, 2]", "msg_quarantined"))
    sender.admin(f"/events/{succeeded['id']}")
    sender.admin(f"/records/{failed['data']['id']}")
    HTTP.get(f"{process.url}/admin/events/x", headers={"authorization": "Bearer wrong-token-value"})
    sender.sensitive.add("wrong-token-value")
    process.stop()

    lines = [json.loads(line) for line in process.output().splitlines()]
    requests = [line for line in lines if line["event"] == "request"]
    assert [(r["path"], r["http_status"]) for r in requests] == [
        ("/readyz", 200),
        ("/webhooks/rivya", 200),
        ("/webhooks/rivya", 200),
        ("/webhooks/rivya", 200),
        ("/webhooks/rivya", 401),
        ("/webhooks/rivya", 200),
        (f"/admin/events/{succeeded['id']}", 200),
        (f"/admin/records/{failed['data']['id']}", 200),
        ("/admin/events/x", 401),
    ]
    assert [r.get("outcome") or r.get("reason") for r in requests[1:6]] == [
        "applied",
        "duplicate",
        "applied",
        "no_matching_signature",
        "quarantined",
    ]
    assert sender.sensitive.found_in(process.output()) == []
