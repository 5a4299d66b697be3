"""The console's templates: one Jinja2 environment, autoescaping every value (payload fields
are hostile input), and the few filters the pages share."""

from pathlib import Path
from typing import Any

import jinja2
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from receiver.console.guard import session_of

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pretty"] = _pretty
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
