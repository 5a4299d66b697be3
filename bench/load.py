"""Load generation: signed request feeds, wrk runs over them, and the bare aiohttp client
that sets the ceiling for the forwarder."""

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import uvloop

from receiver.operators.sample import build_sample_event
from receiver.signatures import WebhookSecret, sign_headers

HERE = Path(__file__).parent
CONNECTIONS = 32
DURATION = 10


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    requests: int
    wrapped: bool


def write_feed(path: Path, secret: WebhookSecret, unique: int, copies: int = 1) -> None:
    """Signed requests, one a line; with copies > 1, each block of 100 events is repeated,
    so a duplicate arrives soon after its original, as a retry would."""
    now = int(time.time())
    with path.open("w") as feed:
        for start in range(0, unique, 100):
            block = []
            for _ in range(min(100, unique - start)):
                event = build_sample_event("generation.succeeded")
                body = orjson.dumps(event)
                headers = sign_headers([secret], event["id"], body, now)
                block.append(
                    f"{event['id']}\t{now}\t{headers['webhook-signature']}\t{body.decode()}\n"
                )
            feed.writelines(block * copies)


def wrk(url: str, feed: Path, duration: int, connections: int = CONNECTIONS) -> Load:
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(HERE / "feed.lua"),
            url,
            "--",
            str(feed),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return Load(
        rps=report["requests"] / (report["duration_us"] / 1e6),
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        non_2xx=report["non_2xx"],
        socket_errors=report["socket_errors"],
        requests=report["requests"],
        wrapped=bool(report["wrapped"]),
    )


def combined(loads: list[Load]) -> Load:
    """Parallel wrk runs as one: rates and counts add up, the slower percentiles stand."""
    return Load(
        rps=sum(load.rps for load in loads),
        p50_ms=max(load.p50_ms for load in loads),
        p99_ms=max(load.p99_ms for load in loads),
        non_2xx=sum(load.non_2xx for load in loads),
        socket_errors=sum(load.socket_errors for load in loads),
        requests=sum(load.requests for load in loads),
        wrapped=any(load.wrapped for load in loads),
    )


def aiohttp_ceiling(url: str, body: bytes, requests: int) -> float:
    """Requests/s of a bare aiohttp client posting `body` to `url`, CONNECTIONS at a time,
    on uvloop like `receiver worker`: what the forwarder could reach with no database,
    signing or logging."""

    async def post_all() -> float:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTIONS)
        ) as session:
            slots = asyncio.Semaphore(CONNECTIONS)

            async def post() -> None:
                async with (
                    slots,
                    session.post(
                        url, data=body, headers={"content-type": "application/json"}
                    ) as response,
                ):
                    assert response.status == 200

            await asyncio.gather(*(post() for _ in range(requests // 10)))  # warm
            started = time.perf_counter()
            await asyncio.gather(*(post() for _ in range(requests)))
            return requests / (time.perf_counter() - started)

    return uvloop.run(post_all())
