"""What a request's URL may hold: no NUL character, in its path or its query.

Nothing stored holds one (ingest reads a NUL as `invalid_characters`), so an ID or a filter
with a NUL names nothing; and PostgreSQL refuses NUL in any text it is sent, so such a value
that reached a query was a 500 on every admin lookup and listing and every console page
(found by probing after schemathesis). Refused once per request, before any route runs: a
400, in JSON by `RefuseNulInURL`, except under a mount that answers in its own form (the
console's pages: its guard asks `holds_nul` too, once it knows who is asking); and in
every field of a console filter or an admin JSON body by `refuse_nul`, the same way.
"""

from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.exceptions import InvalidRequestError
from receiver.responses import ORJSONResponse, answer_error

NUL_IN_URL = "the URL holds a NUL character"


class RefuseNulInURL:
    """`answered_under`: the paths of mounts that refuse a NUL themselves, each ending in a
    slash (`/console/`); the mount's own path without it (`/console`, which the router
    redirects to `/console/`) is theirs too."""

    def __init__(self, app: ASGIApp, answered_under: tuple[str, ...] = ()) -> None:
        self.app = app
        self.answered_under = answered_under

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and not f"{scope['path']}/".startswith(self.answered_under)
            and holds_nul(scope)
        ):
            answer = answer_error(InvalidRequestError(NUL_IN_URL))
            response = ORJSONResponse(answer.content, answer.status_code, answer.headers)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def holds_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"%00" in query or b"\x00" in query


def refuse_nul(value: object) -> object:
    """A field validator (pydantic) for what the console and the admin API read: a text
    holding a NUL is invalid, a 400, for the reasons above."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("holds a NUL character")
    return value
