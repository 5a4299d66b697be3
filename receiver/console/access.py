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
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

from receiver.settings import Settings

COOKIE = "receiver_console"
# Sign-in's own CSRF token, before there is a session to hold one.
SIGN_IN_COOKIE = "receiver_console_sign_in"
ADMIN, SUPPORT = "admin", "support"
# Failed sign-ins a client address may make in a window before its sign-ins are slowed.
SIGN_IN_FAILURES = 5
SIGN_IN_WINDOW_SECONDS = 300.0
# Failed sign-ins the whole process takes in a window, from every address, before every
# sign-in is slowed: many addresses guessing at once (a botnet, or a forwarded header
# trusted too widely) are slowed as one. A team mistyping its tokens makes a handful.
SIGN_IN_FAILURES_EVERYWHERE = 100
# Addresses whose failures are remembered, the most recent first: each costs about 200
# bytes, so the table stays under 1 MiB whoever fails. An address pushed out gets its
# five tries back; the process-wide bound above still counts them.
SIGN_IN_ADDRESSES = 4096
# How long a sign-in from an address (or a process) over its budget waits before it is
# checked: one try a second per connection instead of as fast as the server answers.
SIGN_IN_PAUSE_SECONDS = 1.0


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
    """Slows sign-in after failures, without handing anyone a way to lock an operator out.

    What must hold: someone without a token cannot keep out an operator who has one;
    guessing a token stays infeasible; the limiter's memory is bounded whoever calls.

    - The right token always signs in. Past the budget (SIGN_IN_FAILURES from one address,
      or SIGN_IN_FAILURES_EVERYWHERE from all of them, in SIGN_IN_WINDOW_SECONDS), every
      sign-in from there waits SIGN_IN_PAUSE_SECONDS and is then checked as usual: a wrong
      token gets 429, the right one signs in. Refusing instead, before the check, would
      let five wrong tries from anyone behind the same address (every client of an
      ingress that is not trusted for forwarded addresses) keep everyone out, renewed
      every five minutes.
    - Guessing is made infeasible by the tokens, not by this limit: settings refuse one
      under MIN_ADMIN_TOKEN_CHARS (16) characters, and a random one of that length
      (base64url, as `secrets.token_urlsafe(12)` or longer gives) holds 96 bits: at a
      million guesses a second, 2**95 tries take some 10**15 years. The pause
      slows one connection to a try a second, so guessing costs connections, each of
      which the request deadline and the 64 KiB body cap keep cheap for us.
    - Failures are kept per address in a table of at most SIGN_IN_ADDRESSES entries,
      least recently failing first out, and in one window of the process's last
      SIGN_IN_FAILURES_EVERYWHERE failures: bounded memory, per process.
    """

    def __init__(self) -> None:
        # address -> (when its window began, failures in it)
        self._by_address: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._everywhere: deque[float] = deque(maxlen=SIGN_IN_FAILURES_EVERYWHERE)

    def __len__(self) -> int:
        return len(self._by_address)

    def over_budget(self, address: str) -> bool:
        now = time.monotonic()
        everywhere = self._everywhere
        if len(everywhere) == everywhere.maxlen and now - everywhere[0] < SIGN_IN_WINDOW_SECONDS:
            return True
        began, failures = self._by_address.get(address, (now, 0))
        return failures >= SIGN_IN_FAILURES and now - began < SIGN_IN_WINDOW_SECONDS

    def failed(self, address: str) -> None:
        now = time.monotonic()
        self._everywhere.append(now)
        began, failures = self._by_address.pop(address, (now, 0))
        if now - began >= SIGN_IN_WINDOW_SECONDS:
            began, failures = now, 0
        self._by_address[address] = (began, failures + 1)
        if len(self._by_address) > SIGN_IN_ADDRESSES:
            self._by_address.popitem(last=False)
