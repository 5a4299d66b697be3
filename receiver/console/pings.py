"""The console's test send: the "Send test event" button on a destination's page
(`forward.ping`), for the admin role, with the session's CSRF token, audited as `console`.

The answer is the page this POST returns, not a redirect to one: a subscriber's body is
shown once, to whoever asked, and kept nowhere (a notice would carry it in a URL)."""

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from receiver.console.actions import WHO
from receiver.console.forms import checked_form
from receiver.console.recovery import destination_name
from receiver.console.rendering import page
from receiver.destinations import find_destination
from receiver.exceptions import InvalidRequestError
from receiver.forward.ping import SHOWN_BODY_BYTES
from receiver.services import services_of


async def ping_destination(request: Request) -> Response:
    await checked_form(request)
    name = destination_name(request)
    services = services_of(request)
    try:
        destination = find_destination(services.settings.forwarding, name)
    except InvalidRequestError:
        raise HTTPException(404, "No configured destination has that name.") from None
    answer = await services.pinger.ping(destination, WHO)
    return page(request, "ping.html", answer=answer, shown_bytes=SHOWN_BODY_BYTES)
