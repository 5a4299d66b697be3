"""Signing in to the console with a token, and out again."""

import asyncio
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from receiver.console.access import (
    COOKIE,
    SIGN_IN_COOKIE,
    SIGN_IN_PAUSE_SECONDS,
    SignInLimiter,
    Tokens,
    new_secret_value,
    same_value,
)
from receiver.console.forms import checked_form, read_form, refuse_unreadable_form
from receiver.console.guard import session_of
from receiver.console.rendering import page
from receiver.logs import log
from receiver.services import services_of
from receiver.store.database import transaction
from receiver.store.sessions import StoredSession, end_session, save_session

COOKIE_PATH = "/console"


class SignIn:
    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self.limiter = SignInLimiter()

    async def form(self, request: Request) -> Response:
        if session_of(request) is not None:
            return RedirectResponse("/console/", status_code=303)
        return self._form(request)

    def _form(self, request: Request, status_code: int = 200, problem: str = "") -> Response:
        csrf = request.cookies.get(SIGN_IN_COOKIE) or new_secret_value()
        response = page(
            request,
            "login.html",
            status_code,
            csrf=csrf,
            problem=problem,
            configured=self.tokens.any,
        )
        response.set_cookie(
            SIGN_IN_COOKIE,
            csrf,
            max_age=3600,
            path=COOKIE_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def submit(self, request: Request) -> Response:
        """Cheap checks before the body is read (its declared size and type, the CSRF
        cookie, the pause of an address over its failure budget), then the bounded form,
        its CSRF token, and the token: the right one always signs in (`SignInLimiter`)."""
        address = request.client.host if request.client else "unknown"
        refuse_unreadable_form(request)
        expected = request.cookies.get(SIGN_IN_COOKIE)
        if expected is None:
            response = self._form(request, 403, "The form expired: sign in again.")
            response.headers["connection"] = "close"  # its body stays unread
            return response
        over_budget = self.limiter.over_budget(address)
        if over_budget:
            await asyncio.sleep(SIGN_IN_PAUSE_SECONDS)
        form = await read_form(request)
        given_csrf = form.get("csrf")
        if not same_value(given_csrf if isinstance(given_csrf, str) else None, expected):
            return self._form(request, 403, "The form expired: sign in again.")
        token = form.get("token")
        role = self.tokens.role_of(token) if isinstance(token, str) and token else None
        fingerprint = self.tokens.fingerprint(role) if role else None
        if role is None or fingerprint is None:
            self.limiter.failed(address)
            if over_budget:
                log.warning("console_sign_in_refused", host=address, reason="too_many_failures")
                return self._form(request, 429, "Too many failed sign-ins: wait a few minutes.")
            log.warning("console_sign_in_failed", host=address)
            return self._form(request, 401, "That token is not valid here.")
        session_id = new_secret_value()
        stored = StoredSession(role, fingerprint, new_secret_value(), self.tokens.expires_at())
        async with transaction(services_of(request).engine) as connection:
            await save_session(connection, session_id, stored, datetime.now(UTC))
        log.info("audit", who="console", what="sign_in", reason=role)
        response = RedirectResponse("/console/", status_code=303)
        response.set_cookie(
            COOKIE,
            self.tokens.cookie(role, session_id),
            max_age=int(self.tokens.lifetime.total_seconds()),
            path=COOKIE_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        response.delete_cookie(SIGN_IN_COOKIE, path=COOKIE_PATH)
        return response


async def sign_out(request: Request) -> Response:
    session = await checked_form(request, acting=False)
    async with transaction(services_of(request).engine) as connection:
        await end_session(connection, session.session_id)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response
