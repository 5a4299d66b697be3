"""Standard Webhooks signatures: verify what Rivya sends, sign what we forward.

Pure: bytes and a header mapping in, a `VerifiedMessage` out or a `SignatureError`
raised; nothing here knows about HTTP frameworks. The scheme is one class behind the
`Verifier` protocol so another one can be added without touching the rest.

Scheme (standardwebhooks.com): HMAC-SHA256 over ``{webhook-id}.{webhook-timestamp}.{body}``
keyed with the base64 part of a ``whsec_`` secret; ``webhook-signature`` holds
space-separated ``v1,<base64>`` entries, any of which may match any configured key
(several keys exist during a secret rotation).
"""

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from receiver.exceptions import (
    InvalidHeaderError,
    MissingHeaderError,
    NoMatchingSignatureError,
    TimestampOutOfToleranceError,
)

# The format's prefix, not a secret.
SECRET_PREFIX = "whsec_"  # noqa: S105  # nosec B105
MIN_KEY_BYTES = 16
# Bounds make hostile headers cheap to refuse: a real header carries a few entries.
MAX_SIGNATURE_HEADER_CHARS = 4096
_MSG_ID = re.compile(r"[\x21-\x7e]{1,256}")
_MSG_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class WebhookSecret:
    """A signing key; its repr never shows the key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a signing key needs at least {MIN_KEY_BYTES} bytes")
        self._key = key

    @classmethod
    def parse(cls, text: str) -> "WebhookSecret":
        if not text.startswith(SECRET_PREFIX):
            raise ValueError(f"a signing secret starts with {SECRET_PREFIX!r}")
        try:
            key = base64.b64decode(text.removeprefix(SECRET_PREFIX), validate=True)
        except binascii.Error:
            raise ValueError("a signing secret is base64 after its prefix") from None
        return cls(key)

    @classmethod
    def generate(cls) -> "WebhookSecret":
        return cls(secrets.token_bytes(32))

    def reveal(self) -> str:
        return SECRET_PREFIX + base64.b64encode(self._key).decode()

    def sign(self, msg_id: str, msg_timestamp: int, body: bytes) -> bytes:
        content = b"%s.%d.%s" % (msg_id.encode(), msg_timestamp, body)
        return hmac.digest(self._key, content, hashlib.sha256)

    def __repr__(self) -> str:
        return "WebhookSecret('**********')"


@dataclass(frozen=True, slots=True)
class VerifiedMessage:
    msg_id: str
    msg_timestamp: int


class Verifier(Protocol):
    def verify(self, body: bytes, headers: Mapping[str, str]) -> VerifiedMessage: ...


class StandardWebhooks:
    def __init__(
        self,
        secrets: Sequence[WebhookSecret],
        tolerance_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secrets:
            raise ValueError("at least one signing secret is needed")
        self._secrets = tuple(secrets)
        self._tolerance = tolerance_seconds
        self._clock = clock

    def verify(self, body: bytes, headers: Mapping[str, str]) -> VerifiedMessage:
        msg_id = _required(headers, "webhook-id")
        msg_timestamp = _required(headers, "webhook-timestamp")
        msg_signature = _required(headers, "webhook-signature")
        if not _MSG_ID.fullmatch(msg_id):
            raise InvalidHeaderError("webhook-id is not a printable ASCII token")
        if not _MSG_TIMESTAMP.fullmatch(msg_timestamp):
            raise InvalidHeaderError("webhook-timestamp is not unix seconds")
        if len(msg_signature) > MAX_SIGNATURE_HEADER_CHARS:
            raise InvalidHeaderError("webhook-signature is too long")

        timestamp = int(msg_timestamp)
        if abs(self._clock() - timestamp) > self._tolerance:
            raise TimestampOutOfToleranceError("webhook-timestamp is outside the tolerance")

        expected = [secret.sign(msg_id, timestamp, body) for secret in self._secrets]
        for passed in _v1_signatures(msg_signature):
            if any(hmac.compare_digest(passed, candidate) for candidate in expected):
                return VerifiedMessage(msg_id=msg_id, msg_timestamp=timestamp)
        raise NoMatchingSignatureError("no signature matches")


def sign_headers(
    secrets: Sequence[WebhookSecret], msg_id: str, body: bytes, msg_timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`, signed now unless told otherwise,
    with one signature per secret: a receiver that knows any one of them verifies, which is
    how a secret is rotated without downtime."""
    if msg_timestamp is None:
        msg_timestamp = int(time.time())
    signatures = (secret.sign(msg_id, msg_timestamp, body) for secret in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(msg_timestamp),
        "webhook-signature": " ".join(f"v1,{base64.b64encode(s).decode()}" for s in signatures),
    }


def _required(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise MissingHeaderError(f"{name} is missing")
    return value


def _v1_signatures(header: str) -> list[bytes]:
    # Malformed entries never raise: they simply cannot match.
    decoded = []
    for entry in header.split(" "):
        version, _, signature = entry.partition(",")
        if version != "v1":
            continue
        try:
            decoded.append(base64.b64decode(signature, validate=True))
        except binascii.Error:
            continue
    return decoded
