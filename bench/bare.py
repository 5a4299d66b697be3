"""The baseline: a bare Starlette endpoint on the same uvicorn settings as `receiver serve`.

POST /bare reads the body and answers 204; POST /downstream answers 200 (the forwarder's
target in the drain run).
"""

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.server import serve_options
from receiver.settings import Settings


async def bare(request: Request) -> Response:
    await request.body()
    return Response(status_code=204)


async def downstream(request: Request) -> Response:
    await request.body()
    return Response(status_code=200)


REQUEST_TIMEOUT_SECONDS = Settings.model_fields["request_timeout_seconds"].default

app = Starlette(
    routes=[
        Route("/bare", bare, methods=["POST"]),
        Route("/downstream", downstream, methods=["POST"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), **serve_options(REQUEST_TIMEOUT_SECONDS)
    )
