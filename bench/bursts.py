"""Memory under bursts of every size, as after an outage: `receiver serve` on SQLite with two
destinations (forwarding into bench/bare.py's 200 endpoint) takes a burst of 1 signed
webhook, then of 2, and so on up to 256. Each burst is written at once on as many open
connections, so that the writer stores it in batches of about its size, with twice as many
outbox rows. RSS is read after a warm-up and after the last burst.

The writer's statements were once compiled, and kept, for every batch size: this run grew
the process by hundreds of MiB (issue 20). `python -m bench.bursts` runs it alone.
"""

import asyncio
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from bench.servers import receiver_env, serve, start_bare
from receiver.operators.sample import build_sample_event
from receiver.signatures import WebhookSecret, sign_headers

# Every burst size up to the writer's largest batch (EventWriter's max_batch).
LARGEST_BURST = 256
DESTINATIONS = ("billing", "archive")
# Small bursts before the first reading: imports, caches and the allocator's arenas that any
# server has after its first requests are not growth.
WARM_UP_BURSTS = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True, slots=True)
class Bursts:
    requests: int
    non_2xx: int
    seconds: float
    rss_before: float
    rss_after: float
    batches: int
    largest_batches: int  # batches of more than 128 events

    @property
    def growth(self) -> float:
        return self.rss_after - self.rss_before


def run_bursts(workdir: Path, secret: WebhookSecret) -> Bursts:
    sink, base = start_bare(workdir, "bursts-downstream")
    destinations = workdir / "destinations.toml"
    destinations.write_text(
        "".join(
            f'[[destinations]]\nname = "{name}"\nurl = "{base}/downstream"\n'
            'signing_secrets_env = "BENCH_FORWARD_SECRET"\n'
            for name in DESTINATIONS
        )
    )
    env = {
        **receiver_env(workdir, secret, destinations_file=str(destinations), metrics_public="true"),
        "BENCH_FORWARD_SECRET": WebhookSecret.generate().reveal(),
    }
    try:
        process, url = serve(workdir, env)
        try:
            host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
            asyncio.run(_send(host, int(port), secret, WARM_UP_BURSTS))
            rss_before = process.memory("VmRSS")
            started = time.monotonic()
            non_2xx = asyncio.run(_send(host, int(port), secret, range(1, LARGEST_BURST + 1)))
            seconds = time.monotonic() - started
            rss_after = process.memory("VmRSS")
            metrics = httpx.get(url.replace("/webhooks/rivya", "/metrics")).text
        finally:
            process.stop()
    finally:
        sink.stop()
    batches, largest = _batches(metrics)
    return Bursts(
        requests=LARGEST_BURST * (LARGEST_BURST + 1) // 2,
        non_2xx=non_2xx,
        seconds=seconds,
        rss_before=rss_before,
        rss_after=rss_after,
        batches=batches,
        largest_batches=largest,
    )


async def _send(host: str, port: int, secret: WebhookSecret, sizes: range | tuple[int, ...]) -> int:
    """Each burst in `sizes`, in turn: that many connections opened (an idle one would be
    closed by the server's keep-alive timeout), then a request written on each at once;
    how many answers were not 2xx."""
    non_2xx = 0
    for size in sizes:
        requests = [_request(host, secret) for _ in range(size)]
        connections = await asyncio.gather(
            *(asyncio.open_connection(host, port) for _ in range(size))
        )
        try:
            for (_, writer), request in zip(connections, requests, strict=True):
                writer.write(request)
            for reader, _ in connections:
                non_2xx += not 200 <= await _status(reader) < 300
        finally:
            for _, writer in connections:
                writer.close()
    return non_2xx


def _request(host: str, secret: WebhookSecret) -> bytes:
    event = build_sample_event("generation.succeeded")
    body = orjson.dumps(event)
    headers = {
        "host": host,
        "content-type": "application/json",
        "content-length": str(len(body)),
        **sign_headers([secret], event["id"], body),
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"POST /webhooks/rivya HTTP/1.1\r\n{head}\r\n".encode() + body


async def _status(reader: asyncio.StreamReader) -> int:
    """Read one answer (uvicorn always sends its length); its status."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    length = re.search(r"(?im)^content-length:\s*(\d+)", head)
    await reader.readexactly(int(length[1]) if length else 0)
    return int(head.split(" ", 2)[1])


def _batches(metrics: str) -> tuple[int, int]:
    """How many batches the writer committed, and how many had more than 128 events."""

    def value(pattern: str) -> int:
        found = re.search(rf"^receiver_write_batch_size_{pattern} (\S+)$", metrics, re.M)
        return int(float(found[1])) if found else 0

    count = value("count")
    return count, count - value('bucket{le="128.0"}')


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        result = run_bursts(Path(tmp), WebhookSecret.generate())
    print(result, f"growth {result.growth:.1f} MiB")
    return 0 if result.non_2xx == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
