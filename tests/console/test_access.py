"""Tokens, cookies and the sign-in limit, as units."""

from receiver.console.access import ADMIN, SIGN_IN_FAILURES, SUPPORT, SignInLimiter, Tokens
from receiver.settings import Settings
from tests.helpers import new_secret

ADMIN_VALUE, SUPPORT_VALUE = "admin-token-value-0123456789", "support-token-value-0123456789"


def tokens(admin: str = ADMIN_VALUE, support: str = SUPPORT_VALUE) -> Tokens:
    return Tokens(Settings(signing_secrets=new_secret(), admin_token=admin, support_token=support))


def test_a_token_gives_its_role_and_nothing_else_does() -> None:
    configured = tokens()
    assert configured.role_of(ADMIN_VALUE) == ADMIN
    assert configured.role_of(SUPPORT_VALUE) == SUPPORT
    for wrong in ("", ADMIN_VALUE[:-1], ADMIN_VALUE + "x", SUPPORT_VALUE.upper()):
        assert configured.role_of(wrong) is None


def test_a_cookie_reads_back_only_while_its_role_keeps_its_token() -> None:
    configured = tokens()
    cookie = configured.cookie(ADMIN, "session-id")
    assert configured.read_cookie(cookie) == (ADMIN, "session-id")
    assert ADMIN_VALUE not in cookie
    role, session_id, signature = cookie.split(".")
    assert configured.read_cookie(f"{SUPPORT}.{session_id}.{signature}") is None
    assert configured.read_cookie(f"{role}.other-session.{signature}") is None
    assert configured.read_cookie("garbage") is None
    changed = tokens(admin="another-admin-token-0123456789")
    assert changed.read_cookie(cookie) is None
    assert changed.fingerprint(ADMIN) != configured.fingerprint(ADMIN)
    assert changed.fingerprint(SUPPORT) == configured.fingerprint(SUPPORT)


def test_sign_in_failures_are_limited_per_address() -> None:
    limiter = SignInLimiter()
    for _ in range(SIGN_IN_FAILURES):
        assert not limiter.blocked("10.0.0.1")
        limiter.failed("10.0.0.1")
    assert limiter.blocked("10.0.0.1")
    assert not limiter.blocked("10.0.0.2")
