"""The console's forms: read bounded, and checked.

Every form the console's templates post is `application/x-www-form-urlencoded` (none has
a file input), so nothing else is read: a multipart body is refused (415) before any of it
is, and no file part is ever spooled. The body goes through the one bounded reader
(`receiver.bodies`: 64 KiB, the request deadline) and is parsed with a cap on its fields.

Every state-changing console request is a POST whose form carries the session's CSRF
token, compared in constant time; an action also needs the admin role. Anything else is a
403 that changes nothing.
"""

from urllib.parse import parse_qsl

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from receiver.bodies import SMALL_BODY_BYTES, read_small_body, refuse_declared_size
from receiver.console.access import Session, same_value
from receiver.console.guard import session_of
from receiver.exceptions import InvalidRequestError, UnsupportedMediaTypeError

FORM_TYPE = "application/x-www-form-urlencoded"
# The largest form (replay by filter) has seven fields; a browser adds none.
MAX_FORM_FIELDS = 32


def refuse_unreadable_form(request: Request) -> None:
    """The checks that cost nothing, made before any of the body is read: its declared
    size (413) and its media type (415)."""
    refuse_declared_size(request.headers.get("content-length"), SMALL_BODY_BYTES)
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != FORM_TYPE:
        raise UnsupportedMediaTypeError(f"a console form is sent as {FORM_TYPE}")


async def read_form(request: Request) -> FormData:
    refuse_unreadable_form(request)
    body = await read_small_body(request)
    try:
        # Latin-1 maps every byte to a character: a browser sends ASCII here (it
        # percent-encodes the rest, which parse_qsl decodes as UTF-8), anything else
        # simply fails the comparisons it meets.
        fields: list[tuple[str, str | UploadFile]] = list(
            parse_qsl(
                body.decode("latin-1"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
            )
        )
    except ValueError:
        raise InvalidRequestError(f"a console form has at most {MAX_FORM_FIELDS} fields") from None
    return FormData(fields)


async def checked_form(request: Request, acting: bool = True) -> Session:
    session, _ = await session_and_form(request, acting)
    return session


async def session_and_form(request: Request, acting: bool = True) -> tuple[Session, FormData]:
    session = session_of(request)
    if session is None:
        raise HTTPException(403, "Sign in first.")
    form = await read_form(request)
    given = form.get("csrf")
    if not same_value(given if isinstance(given, str) else None, session.csrf_token):
        raise HTTPException(403, "The form expired or did not come from this console.")
    if acting and not session.can_act:
        raise HTTPException(403, "Your sign-in can read, not act: ask an administrator.")
    return session, form


def field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value.strip() or None if isinstance(value, str) else None
