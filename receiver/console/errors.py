"""The console's failures as pages: inside the layout, with the status, a sentence a support
person can act on, and a way back. /admin and the webhook keep answering JSON: these
handlers sit on the console's mount only (`console_mount`).

Which status a failure gets is still decided once: our own failures (`ReceiverError`) go
through `receiver.responses.answer_error`, as the JSON answers do, and the console's own
refusals (a CSRF token that does not match, a role that may not act, an unknown address, a
method a route does not take) are Starlette's `HTTPException`s, which carry theirs. This
module only words them.

The sentence shown is the failure's own (a bad filter names its field and what it accepts);
where it has none, the status's general one below. Browsers send the console no referrer
(`referrer-policy: no-referrer`), so the way back is the list the address belongs to, with
no filter, and the overview.

What the page says was done depends on when the failure came. The refusals (REFUSALS) are
made before anything ran, so they say nothing was changed. A failure after work began (a
500, a 503) may come part-way through: our own (`ReceiverError`) says how far it got in
its message, which the page shows; anything else is unexpected, and the page says the
work may have been done in part. Either shows the time, to find the log by: the request's
line (its path and status) and, for the unexpected, `console_failed` with the error's
class and place. Never its message or traceback: they can quote SQL and what was sent.

Signed out, the page has no navigation and names nothing stored: the guard sends a
signed-out GET to sign-in before any route runs, so only sign-in, the static files and a
refused form answer a signed-out browser, in this module's words and the exception's own
fixed texts; its way back is sign-in.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import cast

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from receiver.console.guard import session_of
from receiver.console.rendering import page
from receiver.exceptions import ReceiverError
from receiver.logs import log
from receiver.responses import answer_error, client_disconnected

# What each status means to someone using the console, when the failure says no more.
WORDS: dict[int, tuple[str, str]] = {
    400: (
        "That request cannot be read",
        "Something in the address or the form is not what the console accepts.",
    ),
    403: ("Not allowed", "Your sign-in may not do this."),
    404: (
        "Not found",
        "Nothing here has that address or ID: the link may be mistyped,"
        " or retention may have removed what it named.",
    ),
    405: (
        "Not possible here",
        "This address does not take that kind of request: use the console's links and buttons.",
    ),
    408: ("Took too long", "The form did not arrive in time: send it again."),
    409: ("Cannot be done here", "This service is not set up for that action."),
    413: ("Too large", "That form is larger than the console reads."),
    415: ("Not a console form", "The console reads only the forms its own pages send."),
    429: ("Too many tries", "Wait a few minutes, then try again."),
    503: (
        "Unavailable for a moment",
        "The database cannot take this now: try again in a few seconds.",
    ),
}
UNEXPECTED = (
    "Something went wrong",
    "Something went wrong on our side; nothing you typed caused it.",
)
# The statuses of refusals made before anything ran: the form, the filter, the role, the
# address or the method is checked, or what the action names looked up, before any write.
REFUSALS = frozenset({400, 403, 404, 405, 408, 409, 413, 415, 429})
NOTHING_CHANGED = "nothing was changed"
MAYBE_IN_PART = "it may have been done in part: check before trying again"
# The list each address belongs to (its first match), as (prefix, list, what it lists).
SECTIONS = (
    ("/console/failed", "/console/failed", "failed jobs"),
    ("/console/record", "/console/records", "records"),
    ("/console/event", "/console/events", "events"),
    ("/console/reprocess", "/console/events", "events"),
    ("/console/deliveries", "/console/deliveries", "deliveries"),
    ("/console/replay", "/console/replay", "replay"),
)


@dataclass(frozen=True, slots=True)
class WayBack:
    href: str
    label: str


def way_back(request: Request) -> WayBack:
    if session_of(request) is None:
        return WayBack("/console/login", "Sign in")
    path = request.url.path
    for prefix, href, listed in SECTIONS:
        if path.startswith(prefix):
            return WayBack(href, f"Back to {listed}, without filters")
    return WayBack("/console/", "Back to the overview")


def error_page(
    request: Request,
    status_code: int,
    detail: str = "",
    headers: Mapping[str, str] | None = None,
    ours: bool = False,
) -> Response:
    """`detail`: the failure's own sentence, if it has one; `ours`, whether it is one of
    our own failures (`ReceiverError`), whose words say how far a failure part-way got."""
    title, general = WORDS.get(status_code, UNEXPECTED)
    if status_code in REFUSALS:
        sentence, outcome, when = detail or general, NOTHING_CHANGED, None
    else:
        outcome = detail if ours and detail else MAYBE_IN_PART
        sentence, when = general, datetime.now(UTC).isoformat(timespec="seconds")
    response = page(
        request,
        "error.html",
        status_code,
        status=status_code,
        title=title,
        sentence=sentence,
        outcome=f"{outcome.rstrip('.')}.",
        when=when,
        back=way_back(request),
    )
    response.headers.update(headers or {})
    return response


async def receiver_error_page(request: Request, exc: Exception) -> Response:
    answer = answer_error(cast(ReceiverError, exc))  # Starlette routes only these here
    return error_page(
        request, answer.status_code, answer.content["detail"], answer.headers, ours=True
    )


async def http_error_page(request: Request, exc: Exception) -> Response:
    exc = cast(HTTPException, exc)  # Starlette routes only these here
    # Starlette's own (an unknown address, a method a route does not take) say only the
    # status's name: ours say more.
    detail = "" if exc.detail == HTTPStatus(exc.status_code).phrase else exc.detail
    return error_page(request, exc.status_code, detail, exc.headers)


async def unexpected_error_page(request: Request, exc: Exception) -> Response:
    """Any other failure: a 500 page, its class and place logged (`receiver.logs` keeps
    its message out), as Starlette's own 500 would have been, outside the console's
    headers and layout."""
    structlog.contextvars.bind_contextvars(reason="unexpected_error")
    log.error("console_failed", exc_info=exc)
    return error_page(request, 500)


CONSOLE_EXCEPTION_HANDLERS = {
    ReceiverError: receiver_error_page,
    HTTPException: http_error_page,
    # A browser that hung up mid-form reads no page: answered as everywhere else.
    ClientDisconnect: client_disconnected,
    Exception: unexpected_error_page,
}
