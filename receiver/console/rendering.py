"""The console's templates: one Jinja2 environment, autoescaping every value (payload fields
are hostile input), and the few filters the pages share."""

from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import jinja2
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from receiver.console.guard import session_of
from receiver.console.notices import notice_of
from receiver.credits import CreditsExplained, explain_credits
from receiver.forward.failures import describe_failure

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def segment(value: str) -> str:
    """`value` as one path segment: every character but the unreserved ones (RFC 3986
    section 2.3) percent-encoded, `/`, `?`, `#` and `%` included. Starlette decodes the path
    before routing, so the route sees `value` again. Forms carry their IDs so encoded too."""
    return quote(value, safe="")


def page_of(value: str, kind: Literal["event", "record"]) -> str:
    """The URL of the console's page for the event or record whose ID is `value`.

    An ID is one path segment (`/console/events/{segment}`) unless it is made only of dots:
    browsers follow the WHATWG URL standard, which reads `.`, `..` and their escapes (`%2E`,
    `.%2e`, ...) in a path as dot-segments however encoded, so `/console/events/%2E%2E` led
    to `/console/`. Such an ID travels in the query of a fixed route instead, where dots are
    only text: `/console/event?id=..`."""
    if value.strip("."):
        return f"/console/{kind}s/{segment(value)}"
    return f"/console/{kind}?id={segment(value)}"


def _credits(record: dict[str, Any]) -> CreditsExplained:
    return explain_credits(record["reserved_credits"], record["final_credits"])


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
    env.filters["page_of"] = page_of
    env.filters["failure"] = describe_failure
    env.filters["credits"] = _credits
    env.filters["notice"] = notice_of
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
