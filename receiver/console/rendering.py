"""The console's templates: one Jinja2 environment, autoescaping every value (payload fields
are hostile input), and the few filters the pages share."""

from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from receiver.console.guard import session_of

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def segment(value: str) -> str:
    """`value` as one path segment: every character but the unreserved ones (RFC 3986
    section 2.3) percent-encoded, `/`, `?`, `#` and `%` included, and an ID made only of
    dots encoded whole, so that RFC 3986's resolution does not take `.` or `..` for a
    dot-segment. (Browsers follow the WHATWG URL standard, which also reads `%2E` and
    `%2E%2E` as dot-segments: so no action puts its ID in its URL; they post it in a form
    field.) Starlette decodes the path before routing, so the route sees `value` again."""
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if not encoded.strip(".") else encoded


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pretty"] = _pretty
    env.filters["segment"] = segment
    return Jinja2Templates(env=env)


templates = _templates()


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    """Render a page, with the signed-in session (its role and CSRF token) for the layout."""
    return templates.TemplateResponse(
        request,
        name,
        {"session": session_of(request), **context},
        status_code=status_code,
    )
