"""Why a delivery attempt failed, in words a support person reads: "connection refused or
host unreachable", "timed out after 10 s", "HTTP 503".

Pure. What is stored is only the exception's class name (`error_class` on an attempt,
`last_error` on a delivery) and the HTTP status, so the mapping is by name, not by
`isinstance`. Names are aiohttp's (3.10 and later) and the standard library's, as the
forwarder's one `except` records them; each subclass is named before it could be confused
with its parent (`ClientConnectorDNSError` is a `ClientConnectorError`, the certificate and
SSL errors are too). A name not listed reads "request failed", and the class is always shown
beside the phrase for engineers.
"""

from receiver.store.deliveries import ORPHANED

TIMEOUT = "timed out"
UNKNOWN = "request failed"
PHRASES = {
    # aiohttp wraps any OSError of the connect (refused, no route, reset) in this one class.
    "ClientConnectorError": "connection refused or host unreachable",
    "ClientConnectorDNSError": "name not resolved",
    "gaierror": "name not resolved",
    "ClientConnectorCertificateError": "TLS certificate rejected",
    "SSLCertVerificationError": "TLS certificate rejected",
    "ClientConnectorSSLError": "TLS handshake failed",
    "ClientSSLError": "TLS handshake failed",
    "SSLError": "TLS handshake failed",
    "ServerFingerprintMismatch": "TLS certificate rejected",
    "ClientProxyConnectionError": "proxy unreachable",
    "ClientHttpProxyError": "proxy refused the request",
    "ConnectionRefusedError": "connection refused",
    "ServerDisconnectedError": "server closed the connection without answering",
    "ClientConnectionResetError": "connection reset",
    "ConnectionResetError": "connection reset",
    "ClientOSError": "network error",
    "ClientConnectionError": "network error",
    "ServerConnectionError": "network error",
    "ClientPayloadError": "response body broken off",
    "ClientResponseError": "malformed HTTP response",
    "TooManyRedirects": "too many redirects",
    "InvalidURL": "invalid URL",
    "InvalidUrlClientError": "invalid URL",
    "NonHttpUrlClientError": "not an http or https URL",
    # Retention's mark on a delivery whose destination is no longer configured.
    ORPHANED: "destination no longer configured",
}
TIMEOUTS = frozenset(
    {"TimeoutError", "ServerTimeoutError", "ConnectionTimeoutError", "SocketTimeoutError"}
)


def describe_failure(
    error_class: str | None, status_code: int | None = None, duration_ms: float | None = None
) -> str | None:
    """The phrase for an attempt (or a delivery's last one), None when nothing failed.

    A timeout says how long the attempt waited when its duration is known (an attempt's
    row has it, a delivery's summary does not): the time it took, not today's setting,
    which may have changed since."""
    if error_class:
        if error_class in TIMEOUTS:
            if duration_ms is None:
                return TIMEOUT
            return f"{TIMEOUT} after {round(duration_ms / 1000, 1):g} s"
        return PHRASES.get(error_class, UNKNOWN)
    if status_code is not None and not 200 <= status_code < 300:
        return f"HTTP {status_code}"
    return None
