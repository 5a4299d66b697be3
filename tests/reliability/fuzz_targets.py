"""Coverage-guided fuzzing (atheris, libFuzzer) of the code that reads untrusted bytes: the
signature verifier and the event parser. Run one target with libFuzzer's flags:

    python -m tests.reliability.fuzz_targets verifier|envelope [-max_total_time=N] [CORPUS]

Give the envelope target a corpus folder holding a real event as its seed.

Any exception other than the verifier's refusals, or a broken promise below, is a crash.
"""

import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports(include=["receiver"]):
    from receiver.exceptions import SignatureError
    from receiver.ingest.envelope import parse_event
    from receiver.signatures import StandardWebhooks, WebhookSecret, sign_headers

SECRET = WebhookSecret(b"fuzzing-key-of-32-bytes-exactly!")
NOW = 1_800_000_000
VERIFIER = StandardWebhooks([SECRET], tolerance_seconds=300, clock=lambda: NOW)


def verifier(data: bytes) -> None:
    """Refuses with a SignatureError or accepts; accepts only what SECRET signed."""
    fuzz = atheris.FuzzedDataProvider(data)
    msg_id = fuzz.ConsumeUnicodeNoSurrogates(fuzz.ConsumeIntInRange(0, 300))
    timestamp = NOW + fuzz.ConsumeIntInRange(-600, 600)
    body = fuzz.ConsumeBytes(fuzz.ConsumeIntInRange(0, 2048))
    signed = fuzz.ConsumeBool()
    headers = sign_headers([SECRET], msg_id, body, timestamp)
    if not signed:
        headers["webhook-signature"] = fuzz.ConsumeUnicodeNoSurrogates(5000)
    if fuzz.ConsumeBool():
        headers["webhook-timestamp"] = fuzz.ConsumeUnicodeNoSurrogates(20)
    try:
        message = VERIFIER.verify(body, headers)
    except SignatureError:
        return
    if not signed:
        raise AssertionError("accepted a signature that SECRET did not make")
    if message.msg_id != msg_id:
        raise AssertionError("accepted under another id")


def envelope(data: bytes) -> None:
    """Total: every body gives an event, with an ID, or a quarantine reason."""
    event = parse_event(data, "msg_fuzz")  # the whole input is the body: seeds are events
    if not event.event_id:
        raise AssertionError("an event without an ID")
    if event.quarantine_reason is None and event.type is None:
        raise AssertionError("accepted without a type")


TARGETS: dict[str, Callable[[bytes], None]] = {"verifier": verifier, "envelope": envelope}

if __name__ == "__main__":
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()
