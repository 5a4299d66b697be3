"""A stand-in for Rivya's API: a real Starlette app under uvicorn, on a loopback port, in a
thread of the test process. It checks the bearer key as Rivya does and serves generations
and the credit balance from tables the test controls; a test can also script the next
answers (a 429, a 500, broken JSON) or make it hang."""

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.helpers import free_port, wait_until


@dataclass(frozen=True, slots=True)
class Call:
    at: float
    path: str
    authorized: bool


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, code: str) -> Answer:
    body = {"error": {"code": code, "message": "as Rivya says it", "requestId": "req_1"}}
    return Answer(status, orjson.dumps(body))


class FakeRivya:
    def __init__(self, key: str) -> None:
        self.key = key
        self.generations: dict[str, dict[str, Any]] = {}
        # An answer of the test's own for a task, whatever `generations` holds, every time.
        self.answers: dict[str, Answer] = {}
        self.credits = 1000
        # Answers given, in order, before any normal one; each is used once.
        self.scripted: list[Answer] = []
        self.hang = False
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/v1"
        app = Starlette(
            routes=[
                Route("/api/v1/generations/{task_id}", self._generation),
                Route("/api/v1/credits", self._credits),
            ]
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_until(lambda: self._server.started, timeout=10, what="the fake Rivya API")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def calls_to(self, prefix: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.path.startswith(prefix)]

    async def _generation(self, request: Request) -> Response:
        return await self._answer(request, lambda: self._generation_answer(request))

    def _generation_answer(self, request: Request) -> Answer:
        if (answer := self.answers.get(request.path_params["task_id"])) is not None:
            return answer
        generation = self.generations.get(request.path_params["task_id"])
        if generation is None:
            return error(404, "not_found")
        return Answer(200, orjson.dumps(generation))

    async def _credits(self, request: Request) -> Response:
        return await self._answer(
            request, lambda: Answer(200, orjson.dumps({"current_credits": self.credits}))
        )

    async def _answer(self, request: Request, normal: Any) -> Response:
        authorized = request.headers.get("authorization") == f"Bearer {self.key}"
        with self._lock:
            self.calls.append(Call(time.monotonic(), request.url.path, authorized))
            scripted = self.scripted.pop(0) if self.scripted and authorized else None
        if self.hang:
            await asyncio.sleep(60)
        answer = error(401, "api_key_invalid") if not authorized else scripted or normal()
        return Response(answer.body, answer.status, answer.headers, "application/json")
