"""The failures this service names, and nothing else.

    ReceiverError
    ├── RejectedRequestError         a client sent something we refuse (4xx)
    │   ├── SignatureError           the delivery is not authentic (401)
    │   │   ├── MissingHeaderError
    │   │   ├── InvalidHeaderError
    │   │   ├── TimestampOutOfToleranceError
    │   │   └── NoMatchingSignatureError
    │   ├── UnsupportedMediaTypeError  the body is not declared as JSON (415)
    │   ├── PayloadTooLargeError     the body is over RECEIVER_MAX_BODY_BYTES (413)
    │   ├── RequestTimeoutError      the body did not arrive in time (408)
    │   ├── UnauthorizedError        admin call without the right token (401)
    │   ├── NotFoundError            an unknown event or record (404)
    │   ├── InvalidRequestError      an admin request we cannot read (400)
    │   ├── ConflictError            a request that contradicts what is stored (409)
    │   ├── TooManyPingsError        test sends over their bound in flight (429)
    │   └── ForwardingDisabledError  a replay while no downstream is configured (409)
    ├── StoreUnavailableError        the database cannot take the write now (503)
    ├── StoppedPartWayError          a replay or reprocess failed after chunks committed (503)
    └── SettingsError                the configuration is unusable; stops the process

`receiver.responses` maps each family to one HTTP status, in one place.
"""


class ReceiverError(Exception):
    """Base class of every failure the service raises on purpose."""


class RejectedRequestError(ReceiverError):
    """The request is refused; nothing was stored."""

    code = "rejected"


class SignatureError(RejectedRequestError):
    code = "invalid_signature"


class MissingHeaderError(SignatureError):
    code = "missing_header"


class InvalidHeaderError(SignatureError):
    code = "invalid_header"


class TimestampOutOfToleranceError(SignatureError):
    code = "timestamp_out_of_tolerance"


class NoMatchingSignatureError(SignatureError):
    code = "no_matching_signature"


class UnsupportedMediaTypeError(RejectedRequestError):
    code = "unsupported_media_type"


class PayloadTooLargeError(RejectedRequestError):
    code = "payload_too_large"


class RequestTimeoutError(RejectedRequestError):
    code = "request_timeout"


class UnauthorizedError(RejectedRequestError):
    code = "unauthorized"


class NotFoundError(RejectedRequestError):
    code = "not_found"


class InvalidRequestError(RejectedRequestError):
    code = "invalid_request"


class ConflictError(RejectedRequestError):
    code = "conflict"


class TooManyPingsError(RejectedRequestError):
    code = "too_many_pings"


class ForwardingDisabledError(RejectedRequestError):
    code = "forwarding_disabled"


class StoreUnavailableError(ReceiverError):
    """The write was not made durable; the sender should retry later."""

    code = "store_unavailable"


class StoppedPartWayError(ReceiverError):
    """An operator's action done chunk by chunk failed part-way; its message says what the
    chunks before the failure did, which stays done."""

    code = "stopped_part_way"


class SettingsError(ReceiverError):
    """Raised at start-up; its message names the offending variable."""
