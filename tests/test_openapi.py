"""docs/openapi.json against the app itself: a valid OpenAPI 3.1 document, naming exactly the
routes the app has under /admin and /webhooks, and served as it is committed. (The answers
are checked against it by tests/test_schemathesis.py, on a live server.)"""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from jsonschema_rs import ValidationError
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from receiver.app import create_app
from receiver.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.helpers import new_secret

DOCUMENT = Path(__file__).parents[1] / "docs" / "openapi.json"
DOCUMENTED_PREFIXES = ("/admin/", "/webhooks/")
# `{event_id:path}` is `{event_id}` in OpenAPI's templates (whose values are one segment:
# a slash in an ID is sent as %2F).
CONVERTOR = re.compile(r"\{(\w+):\w+\}")
# Starlette answers HEAD wherever it answers GET; the document names the GET.
IMPLIED_METHODS = {"HEAD"}


def served_routes(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(METHOD, path) of every endpoint, mounts walked into."""
    for route in routes:
        if isinstance(route, Mount):
            yield from served_routes(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted(set(route.methods or ()) - IMPLIED_METHODS):
                yield method, CONVERTOR.sub(r"{\1}", prefix + route.path)


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    }


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DOCUMENT.read_text())
    return loaded


@pytest.fixture(scope="module")
def app() -> Starlette:
    # Its lifespan does not run (no database): the routes and the document need none.
    return create_app(Settings(signing_secrets=new_secret(), admin_token=ADMIN_TOKEN))


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(document).validate()


def test_the_validation_would_catch_a_broken_document(document: dict[str, Any]) -> None:
    """The check above can fail: a response without its required description does."""
    broken = json.loads(json.dumps(document))
    del broken["paths"]["/admin/stats"]["get"]["responses"]["200"]["description"]
    with pytest.raises(ValidationError):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_admin_and_webhook_route_is_documented_and_nothing_else(
    app: Starlette, document: dict[str, Any]
) -> None:
    served = {
        (method, path)
        for method, path in served_routes(app.routes)
        if path.startswith(DOCUMENTED_PREFIXES)
    }
    assert served, "no route found under /admin or /webhooks"
    assert documented_routes(document) == served


def test_every_documented_refusal_is_the_error_shape(document: dict[str, Any]) -> None:
    """Each 4xx and 5xx a route may give is {"error", "detail"}, as receiver.responses makes."""
    refusals = [
        (path, method, status, answer)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status, answer in operation["responses"].items()
        if status[0] in "45"
    ]
    assert refusals
    for path, method, status, answer in refusals:
        if "$ref" in answer:
            answer = document["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
        schema = answer["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)


@pytest.mark.anyio
async def test_the_served_document_is_the_committed_one_behind_the_token(app: Starlette) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        locked = await client.get("/admin/openapi.json")
        served = await client.get(
            "/admin/openapi.json", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    assert (locked.status_code, locked.json()["error"]) == (401, "unauthorized")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    assert served.content == DOCUMENT.read_bytes()
