"""`producer.verify_callback`: what an app runs on smsq's status callbacks. A good
signature within the tolerance passes; a tampered body, another secret, a stale or
future timestamp, a missing or malformed header fail, and nothing raises."""

from __future__ import annotations

import httpx
import pytest

from producer import verify_callback
from producer.signing import signature, signed_headers

SECRET = "app-callback-secret-1"
BODY = b'{"id": "m1", "status": "delivered", "event_id": 7}'
NOW = 1_760_000_000


def test_a_fresh_signature_verifies_with_any_header_case() -> None:
    headers = signed_headers(BODY, SECRET, now=NOW)
    assert verify_callback(BODY, headers, SECRET, now=NOW + 299)
    lowered = {k.lower(): v for k, v in headers.items()}
    assert verify_callback(BODY, lowered, SECRET, now=NOW)
    assert verify_callback(BODY, httpx.Headers(headers), SECRET.encode(), now=NOW)
    assert verify_callback(BODY.decode(), list(headers.items()), SECRET, now=NOW)


def test_the_timestamp_is_signed_so_it_cannot_be_moved() -> None:
    headers = signed_headers(BODY, SECRET, now=NOW)
    moved = {**headers, "X-Smsq-Timestamp": str(NOW + 1000)}
    assert not verify_callback(BODY, moved, SECRET, now=NOW + 1000)


@pytest.mark.parametrize("skew", [301, -301, 10_000])
def test_a_stale_or_future_callback_fails(skew: int) -> None:
    headers = signed_headers(BODY, SECRET, now=NOW)
    assert not verify_callback(BODY, headers, SECRET, now=NOW + skew)
    assert verify_callback(BODY, headers, SECRET, tolerance=abs(skew), now=NOW + skew)


def test_another_body_or_secret_fails() -> None:
    headers = signed_headers(BODY, SECRET, now=NOW)
    assert not verify_callback(BODY.replace(b"delivered", b"failed"), headers, SECRET, now=NOW)
    assert not verify_callback(BODY, headers, "another-secret", now=NOW)
    assert not verify_callback(BODY, headers, "", now=NOW)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Smsq-Timestamp": str(NOW)},
        {"X-Smsq-Signature": signature(BODY, SECRET, NOW)},
        {"X-Smsq-Timestamp": "soon", "X-Smsq-Signature": signature(BODY, SECRET, NOW)},
        {"X-Smsq-Timestamp": "١٧٦٠٠٠٠٠٠٠", "X-Smsq-Signature": "sha256=x"},
        {"X-Smsq-Timestamp": str(NOW), "X-Smsq-Signature": "sha256=é"},
        {"X-Smsq-Timestamp": str(NOW), "X-Smsq-Signature": "md5=abc"},
    ],
)
def test_missing_or_malformed_headers_fail_without_raising(headers: dict[str, str]) -> None:
    assert verify_callback(BODY, headers, SECRET, now=NOW) is False


def test_one_of_several_signatures_may_match() -> None:
    good = signature(BODY, SECRET, NOW)
    headers = {"X-Smsq-Timestamp": str(NOW), "X-Smsq-Signature": f"sha256=00, {good}"}
    assert verify_callback(BODY, headers, SECRET, now=NOW)
