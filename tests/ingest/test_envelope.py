"""The envelope parser: the documented shapes, each quarantine reason, and totality."""

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.generations import MAX_ID_CHARS
from receiver.ingest.envelope import parse_event
from receiver.model import Event
from tests.envelopes import body_of, envelopes
from tests.helpers import make_event


def parse(event: Any) -> Event:
    return parse_event(orjson.dumps(event), "msg_fallback")


def test_documented_succeeded_event_parses_to_its_generation() -> None:
    event = make_event(updated_at=datetime(2026, 5, 10, 0, 1, tzinfo=UTC))
    parsed = parse(event)
    assert parsed.quarantine_reason is None
    assert (parsed.event_id, parsed.type, parsed.api_version) == (
        event["id"],
        "generation.succeeded",
        "2026-05-11",
    )
    generation = parsed.generation
    assert generation is not None
    assert generation.task_id == event["data"]["id"]
    assert generation.status == "succeeded"
    assert generation.result_urls == tuple(event["data"]["result"]["urls"])
    assert generation.updated_at == datetime(2026, 5, 10, 0, 1, tzinfo=UTC)


def test_failed_event_carries_error_code_and_message() -> None:
    generation = parse(make_event("generation.failed")).generation
    assert generation is not None
    assert generation.error_code == "generation_failed"
    assert generation.error_message is not None
    assert generation.result_urls == ()


def test_primary_url_alone_is_a_result() -> None:
    event = make_event()
    event["data"]["result"] = {"primary_url": "https://media.example/a.png"}
    generation = parse(event).generation
    assert generation is not None
    assert generation.result_urls == ("https://media.example/a.png",)


def test_unknown_type_is_kept_without_a_generation() -> None:
    event = make_event()
    event["type"] = "generation.queued"
    parsed = parse(event)
    assert (parsed.type, parsed.generation, parsed.quarantine_reason) == (
        "generation.queued",
        None,
        None,
    )


def test_timestamps_are_normalised_to_utc() -> None:
    event = make_event()
    event["data"]["updated_at"] = "2026-05-10T02:00:00+02:00"
    generation = parse(event).generation
    assert generation is not None
    assert generation.updated_at == datetime(2026, 5, 10, 0, 0, tzinfo=UTC)


def _with(path: str, value: Any) -> dict[str, Any]:
    event = make_event()
    target = event
    *parents, leaf = path.split(".")
    for key in parents:
        target = target[key]
    if value is ...:
        del target[leaf]
    else:
        target[leaf] = value
    return event


QUARANTINES = {
    "invalid_event_id": [_with("id", 5), _with("id", ""), _with("id", ...)],
    "invalid_type": [_with("type", None), _with("type", ["x"]), _with("type", "t" * 257)],
    "invalid_api_version": [_with("api_version", 20260511)],
    # The last two are valid times that UTC cannot hold: the offset carries them past year
    # 9999 or before year 1 (they once raised OverflowError, a 500 on every retry).
    "invalid_created_at": [
        _with("created_at", "yesterday"),
        _with("created_at", "2026-05-10"),
        _with("created_at", "9999-12-31T23:59:59-01:00"),
        _with("created_at", "0001-01-01T00:00:00+00:01"),
    ],
    "missing_generation": [_with("data", ...), _with("data", [])],
    "invalid_task_id": [_with("data.id", None), _with("data.id", "x" * 257)],
    "invalid_status": [
        _with("data.status", "done"),
        _with("data.status", ...),
        _with("data.status", []),
    ],
    "status_mismatch": [_with("data.status", "failed"), _with("data.status", "processing")],
    "invalid_updated_at": [
        _with("data.updated_at", ...),
        _with("data.updated_at", "soon"),
        _with("data.updated_at", "9999-12-31T23:59:59-01:00"),
        _with("data.updated_at", "0001-01-01T00:00:00+14:00"),
    ],
    "invalid_model": [_with("data.model", 3)],
    "invalid_credits": [
        _with("data.final_credits", True),
        _with("data.final_credits", 1.5),
        _with("data.reserved_credits", -1),
        _with("data.reserved_credits", "4"),
    ],
    "invalid_result": [_with("data.result", "url"), _with("data.result.urls", [1])],
    "invalid_error": [_with("data.error", "boom"), _with("data.error", {"code": 7})],
    "invalid_characters": [
        _with("type", "generation.succeeded\x00"),
        _with("data.id", "task\x00"),
        _with("data.model", "m\x00"),
        _with("api_version", "\x002026-05-11"),
        _with("data.result.urls", ["https://media.example/a\x00.png"]),
        _with("data.result", {"primary_url": "\x00"}),
        _with("data.error", {"code": "\x00", "message": "m"}),
    ],
}


@pytest.mark.parametrize(
    ("reason", "event"),
    [(reason, event) for reason, events in QUARANTINES.items() for event in events],
)
def test_shapes_we_do_not_understand_are_quarantined_with_a_reason(
    reason: str, event: dict[str, Any]
) -> None:
    parsed = parse(event)
    assert parsed.quarantine_reason == reason
    assert parsed.generation is None


def test_an_event_id_with_nul_is_quarantined_under_the_header_id() -> None:
    parsed = parse(_with("id", "evt_\x00"))
    assert (parsed.event_id, parsed.quarantine_reason) == ("msg_fallback", "invalid_characters")


def test_a_nul_in_an_error_message_is_shown_as_a_replacement_and_the_event_applies() -> None:
    event = make_event("generation.failed")
    event["data"]["error"]["message"] = "out of\x00memory"
    parsed = parse(event)
    assert parsed.quarantine_reason is None
    assert parsed.generation is not None
    assert parsed.generation.error_message == "out of\N{REPLACEMENT CHARACTER}memory"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1]", "not_an_object"),
        (b'{"id": "\\ud800"}', "invalid_json"),
        (b'{"id": "evt_1", "n": 1e400}', "invalid_json"),
        (b"[" * 5000 + b"]" * 5000, "invalid_json"),
    ],
)
def test_unreadable_bodies_fall_back_to_the_header_id(body: bytes, reason: str) -> None:
    parsed = parse_event(body, "msg_fallback")
    assert (parsed.event_id, parsed.quarantine_reason) == ("msg_fallback", reason)


# The parser reads each field by its key and type: a value's inner shape past a few leaves
# adds nothing to find, and generating 30 leaves a value took most of each example's time.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=8,
)
envelope_keys = st.sampled_from(["id", "type", "api_version", "created_at", "data"])
generation_keys = st.sampled_from(
    ["id", "status", "model", "reserved_credits", "final_credits", "result", "error", "updated_at"]
)


@given(body=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(body: bytes) -> None:
    assert parse_event(body, "msg_fallback").event_id


@given(value=json_values)
def test_arbitrary_json_never_raises(value: Any) -> None:
    assert parse(value).event_id


@settings(max_examples=1000)
@given(
    envelope=st.dictionaries(envelope_keys, json_values),
    generation=st.dictionaries(generation_keys, json_values),
    event_type=st.sampled_from(["generation.succeeded", "generation.failed", "other"]),
)
def test_arbitrary_envelope_fields_never_raise(
    envelope: dict[str, Any], generation: dict[str, Any], event_type: str
) -> None:
    parsed = parse({**make_event(event_type), **envelope, "data": {**generation}})
    assert parsed.event_id
    assert parsed.generation is None or parsed.quarantine_reason is None


@settings(max_examples=1000)
@given(event=envelopes())
def test_any_field_value_gives_an_event_every_backend_can_store(event: dict[str, Any]) -> None:
    """Never an exception; what is kept holds no NUL (PostgreSQL's text refuses it) and
    its times are in UTC; what is not understood is quarantined with a reason."""
    parsed = parse_event(body_of(event), "msg_fallback")
    generation = parsed.generation
    texts = [parsed.event_id, parsed.type, parsed.api_version, parsed.quarantine_reason]
    times = [parsed.created_at]
    if generation is not None:
        assert parsed.quarantine_reason is None
        texts += [generation.task_id, generation.status, generation.model, generation.error_code]
        texts += [generation.error_message, *generation.result_urls]
        times.append(generation.updated_at)
    assert 0 < len(parsed.event_id) <= MAX_ID_CHARS
    assert not any("\x00" in text for text in texts if text is not None)
    assert all(moment.utcoffset() == timedelta(0) for moment in times if moment is not None)
