"""Every state-changing console request is a POST whose form carries the session's CSRF
token, compared in constant time; an action also needs the admin role. Anything else is a
403 that changes nothing."""

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request

from receiver.console.access import Session, same_value
from receiver.console.guard import session_of


async def checked_form(request: Request, acting: bool = True) -> Session:
    session, _ = await session_and_form(request, acting)
    return session


async def session_and_form(request: Request, acting: bool = True) -> tuple[Session, FormData]:
    session = session_of(request)
    if session is None:
        raise HTTPException(403, "Sign in first.")
    form = await request.form()
    given = form.get("csrf")
    if not same_value(given if isinstance(given, str) else None, session.csrf_token):
        raise HTTPException(403, "The form expired or did not come from this console.")
    if acting and not session.can_act:
        raise HTTPException(403, "Your sign-in can read, not act: ask an administrator.")
    return session, form


def field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value.strip() or None if isinstance(value, str) else None
