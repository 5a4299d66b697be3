"""The verifier against the independent standardwebhooks package, one test per failure
mode, and properties over arbitrary ids, timestamps, bodies and signature headers."""

import base64
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from receiver.exceptions import (
    InvalidHeaderError,
    MissingHeaderError,
    NoMatchingSignatureError,
    SignatureError,
    TimestampOutOfToleranceError,
)
from receiver.signatures import StandardWebhooks, VerifiedMessage, WebhookSecret, sign_headers

NOW = 1_800_000_000
SECRET = WebhookSecret.generate()
OTHER = WebhookSecret.generate()
msg_ids = st.from_regex(r"[\x21-\x7e]{1,64}", fullmatch=True)
bodies = st.binary(max_size=512)


def verifier(*secrets: WebhookSecret, tolerance: int = 300) -> StandardWebhooks:
    return StandardWebhooks(secrets or (SECRET,), tolerance, clock=lambda: float(NOW))


def test_signature_made_by_standardwebhooks_verifies() -> None:
    now = datetime.now(UTC)
    body = '{"id": "evt_1", "type": "generation.succeeded"}'
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET.reveal()).sign("evt_1", now, body),
    }
    message = StandardWebhooks([SECRET], 300).verify(body.encode(), headers)
    assert message == VerifiedMessage("evt_1", int(now.timestamp()))


def test_our_signature_verifies_with_standardwebhooks() -> None:
    body = b'{"id": "evt_2"}'
    headers = sign_headers([SECRET], "evt_2", body)
    assert Webhook(SECRET.reveal()).verify(body, headers) == {"id": "evt_2"}


def test_signing_with_two_secrets_verifies_with_either_alone() -> None:
    body = b'{"id": "evt_4"}'
    headers = sign_headers([SECRET, OTHER], "evt_4", body)
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (SECRET, OTHER):
        assert Webhook(secret.reveal()).verify(body, headers) == {"id": "evt_4"}


def test_any_configured_secret_verifies() -> None:
    headers = sign_headers([OTHER], "evt_3", b"{}", NOW)
    assert verifier(SECRET, OTHER).verify(b"{}", headers).msg_id == "evt_3"
    with pytest.raises(NoMatchingSignatureError):
        verifier(SECRET).verify(b"{}", headers)


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_or_empty_header_is_refused(name: str) -> None:
    headers = sign_headers([SECRET], "evt", b"{}", NOW)
    with pytest.raises(MissingHeaderError):
        verifier().verify(b"{}", {k: v for k, v in headers.items() if k != name})
    with pytest.raises(MissingHeaderError):
        verifier().verify(b"{}", headers | {name: ""})


@pytest.mark.parametrize(
    "timestamp", ["1800000000.0", "-1800000000", "+1800000000", " 1800000000", "1e9", "٣", "9" * 13]
)
def test_timestamp_must_be_plain_unix_seconds(timestamp: str) -> None:
    headers = sign_headers([SECRET], "evt", b"{}", NOW) | {"webhook-timestamp": timestamp}
    with pytest.raises(InvalidHeaderError):
        verifier().verify(b"{}", headers)


@pytest.mark.parametrize("offset", [-301, 301, -(10**9), 10**9])
def test_timestamp_outside_tolerance_is_refused_both_ways(offset: int) -> None:
    headers = sign_headers([SECRET], "evt", b"{}", NOW + offset)
    with pytest.raises(TimestampOutOfToleranceError):
        verifier().verify(b"{}", headers)


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_timestamp_at_the_tolerance_edge_is_accepted(offset: int) -> None:
    headers = sign_headers([SECRET], "evt", b"{}", NOW + offset)
    assert verifier().verify(b"{}", headers).msg_timestamp == NOW + offset


@pytest.mark.parametrize("msg_id", ["has space", "tab\tid", "é", "x" * 257])
def test_msg_id_must_be_a_printable_token(msg_id: str) -> None:
    headers = sign_headers([SECRET], "evt", b"{}", NOW) | {"webhook-id": msg_id}
    with pytest.raises(InvalidHeaderError):
        verifier().verify(b"{}", headers)


def test_oversized_signature_header_is_refused_cheaply() -> None:
    headers = sign_headers([SECRET], "evt", b"{}", NOW)
    padded = "v1,AAAA " * 1000 + headers["webhook-signature"]
    with pytest.raises(InvalidHeaderError):
        verifier().verify(b"{}", headers | {"webhook-signature": padded})


@pytest.mark.parametrize(
    "garbage", ["v1", "v1,", ",", "v1,%%%", "v1,QUJD=", "v2,AAAA", "v1,AAAA,BBBB", "\x00", "v1 , x"]
)
def test_malformed_entries_never_raise_anything_but_no_match(garbage: str) -> None:
    headers = sign_headers([SECRET], "evt", b"{}", NOW) | {"webhook-signature": garbage}
    with pytest.raises(NoMatchingSignatureError):
        verifier().verify(b"{}", headers)


def test_secret_repr_hides_the_key() -> None:
    assert SECRET.reveal().removeprefix("whsec_") not in repr(SECRET)
    assert repr(SECRET) == "WebhookSecret('**********')"


@pytest.mark.parametrize("text", ["", "whsec_", "sk_abc", "whsec_!!!", "whsec_c2hvcnQ="])
def test_unusable_secret_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"secret|key"):
        WebhookSecret.parse(text)


def _mutate_text(text: str, data: st.DataObject) -> str:
    other = data.draw(st.from_regex(r"[\x21-\x7e]{1,64}", fullmatch=True))
    assume(other != text)
    return other


def _flip_bit(signature: str, data: st.DataObject) -> str:
    raw = bytearray(base64.b64decode(signature.removeprefix("v1,")))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= 1 << data.draw(st.integers(0, 7))
    return "v1," + base64.b64encode(bytes(raw)).decode()


MUTATIONS: dict[
    str, Callable[[dict[str, str], bytes, st.DataObject], tuple[dict[str, str], bytes]]
] = {
    "id": lambda h, b, d: (h | {"webhook-id": _mutate_text(h["webhook-id"], d)}, b),
    "timestamp": lambda h, b, d: (
        h | {"webhook-timestamp": str(NOW + d.draw(st.integers(-300, 300).filter(bool)))},
        b,
    ),
    "body": lambda h, b, d: (h, d.draw(bodies.filter(lambda other: other != b))),
    "signature": lambda h, b, d: (
        h | {"webhook-signature": _flip_bit(h["webhook-signature"], d)},
        b,
    ),
}


@given(msg_id=msg_ids, body=bodies, field=st.sampled_from(sorted(MUTATIONS)), data=st.data())
def test_any_mutation_of_a_signed_message_is_rejected(
    msg_id: str, body: bytes, field: str, data: st.DataObject
) -> None:
    headers = sign_headers([SECRET], msg_id, body, NOW)
    assert verifier().verify(body, headers).msg_id == msg_id
    mutated_headers, mutated_body = MUTATIONS[field](headers, body, data)
    with pytest.raises(SignatureError):
        verifier().verify(mutated_body, mutated_headers)


garbage_entries = st.text(
    alphabet=st.characters(codec="ascii", exclude_characters=" "), min_size=1, max_size=60
)


@given(
    msg_id=msg_ids,
    body=bodies,
    before=st.lists(garbage_entries, max_size=8),
    after=st.lists(garbage_entries, max_size=8),
)
def test_a_valid_signature_among_garbage_entries_is_accepted(
    msg_id: str, body: bytes, before: list[str], after: list[str]
) -> None:
    valid = sign_headers([SECRET], msg_id, body, NOW)
    header = " ".join([*before, valid["webhook-signature"], *after])
    assert verifier().verify(body, valid | {"webhook-signature": header}).msg_id == msg_id


@given(msg_id=msg_ids, body=bodies, header=st.text(max_size=300))
def test_arbitrary_signature_headers_only_ever_fail_as_signature_errors(
    msg_id: str, body: bytes, header: str
) -> None:
    headers = sign_headers([SECRET], msg_id, body, NOW) | {"webhook-signature": header}
    try:
        verifier().verify(body, headers)
    except SignatureError:
        return
    pytest.fail("a header not made with the secret verified")
