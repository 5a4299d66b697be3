"""A realistic, signed Rivya delivery, for smoke tests against a running receiver."""

import secrets
from datetime import UTC, datetime
from typing import Any

import orjson

from receiver.signatures import WebhookSecret, sign_headers

SAMPLE_TYPES = ("generation.succeeded", "generation.failed")


def build_sample_event(event_type: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    succeeded = event_type == "generation.succeeded"
    result_url = f"https://media.example/{secrets.token_hex(8)}.png"
    return {
        "id": f"evt_{secrets.token_hex(12)}",
        "type": event_type,
        "api_version": "2026-05-11",
        "created_at": now,
        "data": {
            "id": f"task_{secrets.token_hex(12)}",
            "status": "succeeded" if succeeded else "failed",
            "model": "z-image",
            "reserved_credits": 1,
            "final_credits": 1 if succeeded else 0,
            "created_at": now,
            "updated_at": now,
            "result": {"primary_url": result_url, "urls": [result_url]} if succeeded else None,
            "error": None
            if succeeded
            else {"code": "generation_failed", "message": "The sample generation failed."},
        },
    }


def sign_sample_event(secret: WebhookSecret, event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(event)
    headers = sign_headers([secret], event["id"], body)
    return body, {**headers, "content-type": "application/json"}
