"""GET /admin/openapi.json: the OpenAPI 3.1 document of the admin API and the webhook
endpoint. Its one source is docs/openapi.json (`receiver/openapi.json` links to it, so the
wheel carries it); the suite checks it against the running app's routes and answers."""

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def openapi_route() -> Route:
    """Read once, when the app is made: the document cannot change while it runs."""
    document = resources.files("receiver").joinpath("openapi.json").read_bytes()

    async def show_openapi(_: Request) -> Response:
        return Response(document, media_type="application/json")

    return Route("/openapi.json", show_openapi)
