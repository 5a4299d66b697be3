"""Who may use the console, and how: sign-in with a token, a signed session cookie, CSRF
tokens on every form, and a limit on failed sign-ins.

Two roles: `admin` (RECEIVER_ADMIN_TOKEN: every page and every action) and `support`
(RECEIVER_SUPPORT_TOKEN: every page, no action). A session is a random ID, kept hashed in
the database (so sign-out ends it on every replica), carried in a cookie as
`role.id.signature`, signed with a key derived from that role's token: a changed token
makes every cookie signed with the old one worthless, and the stored fingerprint of the
token makes its sessions' rows worthless too.
"""

import base64
import hashlib
import hmac
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

from receiver.settings import Settings

COOKIE = "receiver_console"
# Sign-in's own CSRF token, before there is a session to hold one.
SIGN_IN_COOKIE = "receiver_console_sign_in"
ADMIN, SUPPORT = "admin", "support"
# Failed sign-ins a client address may make in a window before it must wait.
SIGN_IN_FAILURES = 5
SIGN_IN_WINDOW_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    role: str
    csrf_token: str

    @property
    def can_act(self) -> bool:
        return self.role == ADMIN


class Tokens:
    """The configured tokens, by role."""

    def __init__(self, settings: Settings) -> None:
        self._by_role: dict[str, SecretStr] = {
            role: token
            for role, token in ((ADMIN, settings.admin_token), (SUPPORT, settings.support_token))
            if token is not None
        }
        self.lifetime = timedelta(hours=settings.console_session_hours)

    @property
    def any(self) -> bool:
        return bool(self._by_role)

    def role_of(self, given: str) -> str | None:
        """The role whose token `given` is; every token is compared, in constant time."""
        found = None
        for role, token in self._by_role.items():
            if hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
                found = role
        return found

    def fingerprint(self, role: str) -> str | None:
        token = self._by_role.get(role)
        if token is None:
            return None
        return _mac(token, b"fingerprint")[:32]

    def cookie(self, role: str, session_id: str) -> str:
        return f"{role}.{session_id}.{_mac(self._by_role[role], session_id.encode())}"

    def read_cookie(self, value: str) -> tuple[str, str] | None:
        """(role, session ID) from a cookie this service signed with a token still in use."""
        role, _, rest = value.partition(".")
        session_id, _, signature = rest.rpartition(".")
        token = self._by_role.get(role)
        if token is None or not session_id:
            return None
        if not hmac.compare_digest(signature.encode(), _mac(token, session_id.encode()).encode()):
            return None
        return role, session_id

    def expires_at(self) -> datetime:
        return datetime.now(UTC) + self.lifetime


def new_secret_value() -> str:
    return secrets.token_urlsafe(32)


def same_value(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _mac(token: SecretStr, message: bytes) -> str:
    key = hashlib.sha256(b"receiver-console:" + token.get_secret_value().encode()).digest()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class SignInLimiter:
    """At most SIGN_IN_FAILURES failed sign-ins per client address in a window, per process."""

    def __init__(self) -> None:
        self._failures: defaultdict[str, deque[float]] = defaultdict(deque)

    def blocked(self, address: str) -> bool:
        failures = self._failures[address]
        cutoff = time.monotonic() - SIGN_IN_WINDOW_SECONDS
        while failures and failures[0] < cutoff:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return False
        return len(failures) >= SIGN_IN_FAILURES

    def failed(self, address: str) -> None:
        self._failures[address].append(time.monotonic())
