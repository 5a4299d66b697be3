"""Tokens, cookies and the sign-in limit, as units."""

import time

import pytest

from receiver.console.access import (
    ADMIN,
    SIGN_IN_ADDRESSES,
    SIGN_IN_FAILURES,
    SIGN_IN_FAILURES_EVERYWHERE,
    SIGN_IN_WINDOW_SECONDS,
    SUPPORT,
    SignInLimiter,
    Tokens,
)
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
        assert not limiter.over_budget("10.0.0.1")
        limiter.failed("10.0.0.1")
    assert limiter.over_budget("10.0.0.1")
    assert not limiter.over_budget("10.0.0.2")


def test_an_address_over_budget_is_let_go_when_its_window_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    limiter = SignInLimiter()
    for _ in range(SIGN_IN_FAILURES):
        limiter.failed("10.0.0.1")
    assert limiter.over_budget("10.0.0.1")
    now[0] += SIGN_IN_WINDOW_SECONDS
    assert not limiter.over_budget("10.0.0.1")
    limiter.failed("10.0.0.1")
    assert not limiter.over_budget("10.0.0.1"), "a new window counts from its first failure"


def test_the_table_of_addresses_never_exceeds_its_cap() -> None:
    limiter = SignInLimiter()
    for n in range(3 * SIGN_IN_ADDRESSES):
        limiter.failed(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
        assert len(limiter) <= SIGN_IN_ADDRESSES
    assert len(limiter) == SIGN_IN_ADDRESSES
    for _ in range(SIGN_IN_FAILURES):
        limiter.failed("192.0.2.1")
    assert limiter.over_budget("192.0.2.1"), "the most recent failures are the ones kept"


def test_failures_from_many_addresses_slow_every_address() -> None:
    """A guesser spread over many addresses (each under its own budget) is slowed as one."""
    limiter = SignInLimiter()
    for n in range(SIGN_IN_FAILURES_EVERYWHERE):
        assert not limiter.over_budget("192.0.2.1")
        limiter.failed(f"10.0.{n >> 8}.{n & 255}")
    assert limiter.over_budget("192.0.2.1")
