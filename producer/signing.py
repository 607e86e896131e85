"""Signatures on status callbacks to the application, and their check for apps.

smsq signs `"<timestamp>.<body>"` with HMAC-SHA256 under SMSQ_APP_CALLBACK_SECRET
and sends `X-Smsq-Timestamp: <unix seconds>` and `X-Smsq-Signature: sha256=<hex>`.
The timestamp is inside the signature, so a captured callback replays only within
`tolerance` seconds; the secret is not the one behind delivery-report URLs, so an
app that can check signatures cannot forge a gateway's report.

    from producer import verify_callback
    ok = verify_callback(request.body, request.headers, os.environ["SMSQ_APP_CALLBACK_SECRET"])
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

TIMESTAMP_HEADER = "X-Smsq-Timestamp"
SIGNATURE_HEADER = "X-Smsq-Signature"
HeadersLike = Mapping[str, str] | Iterable[tuple[str, str]]


def _raw(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def signature(body: bytes | str, secret: str | bytes, timestamp: int) -> str:
    """`sha256=<hex>` of `"<timestamp>.<body>"` under `secret`."""
    signed = str(int(timestamp)).encode() + b"." + _raw(body)
    return "sha256=" + hmac.new(_raw(secret), signed, hashlib.sha256).hexdigest()


def signed_headers(body: bytes, secret: str, now: float | None = None) -> dict[str, str]:
    """The two headers smsq adds to a callback POST."""
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(body, secret, timestamp)}


def _header(headers: HeadersLike, name: str) -> str | None:
    """`name` from a dict, a case-insensitive mapping (Starlette, httpx, Django) or pairs."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    wanted = name.lower()
    for key, value in items:
        key_text = key.decode("latin-1") if isinstance(key, bytes) else str(key)
        if key_text.lower() == wanted:
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


def verify_callback(
    body: bytes | str,
    headers: HeadersLike,
    secret: str | bytes,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """True when `body` was signed by smsq under `secret` within `tolerance` seconds.

    Never raises on what a caller sent: a missing, malformed or stale header is False.
    Give the raw body bytes as received (not re-serialised JSON)."""
    if not secret:
        return False
    stamp = (_header(headers, TIMESTAMP_HEADER) or "").strip()
    given = (_header(headers, SIGNATURE_HEADER) or "").strip()
    if not stamp.isascii() or not stamp.isdigit() or not given:
        return False
    timestamp = int(stamp)
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = signature(body, secret, timestamp).encode()
    found = False
    for candidate in given.split(","):  # several signatures: any one may match
        found |= hmac.compare_digest(candidate.strip().encode("utf-8", "replace"), expected)
    return found
