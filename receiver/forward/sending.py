"""How a destination is sent an event: the one signing and HTTP path shared by deliveries
(`forward.forwarder`) and test sends (`forward.ping`), so a ping proves what a delivery
would meet."""

import aiohttp

from receiver.destinations import Destination
from receiver.signatures import sign_headers


def signed_headers(destination: Destination, event_id: str, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers, signed with each of the destination's secrets."""
    headers = sign_headers(destination.signing_secrets, event_id, body)
    headers["content-type"] = "application/json"
    return headers


def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> "aiohttp.client._RequestContextManager":
    """POST `body` to `url`. Redirects are not followed: a signed event goes only where it
    was configured to go."""
    return session.post(url, data=body, headers=headers, allow_redirects=False)
