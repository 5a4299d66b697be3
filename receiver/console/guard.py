"""In front of every console route: the security headers, and the session.

Every answer gets a Content-Security-Policy that allows nothing from another origin and no
inline script or style, refuses framing, sends no referrer and is never cached. A request
without a valid session is sent to sign-in (a GET) or refused with a 403 page (anything
else); sign-in and the static files need none. A URL holding a NUL is a 400 page, for
either (`receiver.urls`). The error pages (`receiver.console.errors`)
sit between the two, so that they carry the headers and a refusal here is a page too.
"""

from datetime import UTC, datetime

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver.console.access import COOKIE, Session, Tokens
from receiver.services import services_in
from receiver.store.database import transaction
from receiver.store.sessions import find_session
from receiver.urls import holds_nul

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}
OPEN_PATHS = ("/login", "/static/")


class SecurityHeaders:
    """Outermost on the console: every answer carries the headers, error pages included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ConsoleGuard:
    def __init__(self, app: ASGIApp, tokens: Tokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        cookie = HTTPConnection(scope).cookies.get(COOKIE)
        session = await self._session(scope, cookie)
        scope.setdefault("state", {})["console_session"] = session
        if holds_nul(scope):
            # Refused here rather than outside the mount (`receiver.urls`), so that the page
            # has the navigation of whoever asked; before sign-in's redirect, as a 400.
            raise HTTPException(
                400, "The address holds a NUL character (%00): nothing here has one in its name."
            )
        if session is None and not path.startswith(OPEN_PATHS):
            if scope["method"] in ("GET", "HEAD"):
                await RedirectResponse("/console/login", status_code=303)(scope, receive, send)
                return
            # A page (`receiver.console.errors`), like every other refusal.
            raise HTTPException(
                403,
                "Your sign-in has ended (it expired, or you signed out): sign in again."
                if cookie
                else "Sign in first.",
            )
        await self.app(scope, receive, send)

    async def _session(self, scope: Scope, cookie: str | None) -> Session | None:
        found = self.tokens.read_cookie(cookie) if cookie else None
        if found is None:
            return None
        role, session_id = found
        async with transaction(services_in(scope).engine) as connection:
            stored = await find_session(connection, session_id, datetime.now(UTC))
        if stored is None or stored.role != role:
            return None
        if stored.token_fingerprint != self.tokens.fingerprint(role):
            return None
        return Session(session_id, role, stored.csrf_token)


def session_of(connection: HTTPConnection) -> Session | None:
    # Absent where the guard never ran (a failure before it, answered by an error page).
    session: Session | None = connection.scope.get("state", {}).get("console_session")
    return session
