"""Delivery-callback URLs that carry a secret, so forged reports are refused.

The secret is an HMAC of the provider name under SMSQ_CALLBACK_SECRET (or, when
unset, a random key kept in Redis so every process agrees); it sits in the
path, the only part every gateway echoes back unchanged. That secret does this
one job: app callbacks are signed with SMSQ_APP_CALLBACK_SECRET, so an app that
checks signatures learns nothing that forges a delivery report.

Rotation: set the new SMSQ_CALLBACK_SECRET and the old one as
SMSQ_CALLBACK_SECRET_PREVIOUS; tokens of both are accepted (a report under the
old one logs a warning, once per provider and process) until the gateways'
dashboards carry the new URL and the previous value is unset.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from producer.settings import get_settings, provider_settings

log = logging.getLogger("smsq.callbacks")
_KEY = "smsq:callback-secret"
_warned_previous: set[str] = set()
_cached: tuple[str, str] | None = None  # (broker URL, secret)


def _master_secret() -> str:
    global _cached
    configured = get_settings().callback_secret
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value()
    from producer.queues import broker_url

    url = broker_url()
    if _cached is None or _cached[0] != url:  # one secret per Redis (tests switch stacks)
        from worker import redis_client

        client = redis_client.shared()
        client.set(_KEY, secrets.token_urlsafe(32), nx=True)
        value = client.get(_KEY)
        _cached = (url, value.decode() if isinstance(value, bytes) else str(value))
    return _cached[1]


def token_for(secret: str, provider: str) -> str:
    """The path token of `provider` under `secret` (40 hex characters)."""
    return hmac.new(secret.encode(), provider.encode(), hashlib.sha256).hexdigest()[:40]


def callback_token(provider: str) -> str:
    return token_for(_master_secret(), provider)


def token_matches(token: str, expected: list[str]) -> bool:
    """Constant-time over bytes: a token that is not ASCII is simply not a match."""
    given = (token or "").encode("utf-8", "surrogatepass")
    found = False
    for candidate in expected:
        found |= hmac.compare_digest(given, candidate.encode())
    return found


def token_is_valid(provider: str, token: str) -> bool:
    """True for the current token, or for the previous secret's during a rotation."""
    if token_matches(token, [callback_token(provider)]):
        return True
    previous = get_settings().callback_secret_previous
    if previous is None or not previous.get_secret_value():
        return False
    if not token_matches(token, [token_for(previous.get_secret_value(), provider)]):
        return False
    if provider not in _warned_previous:
        _warned_previous.add(provider)
        log.warning(
            "a %s delivery report used the previous callback secret: give the gateway the "
            "new URL (smsq callback-url %s), then unset SMSQ_CALLBACK_SECRET_PREVIOUS",
            provider,
            provider,
        )
    return True


def callback_url(provider: str) -> str | None:
    """The URL to give provider `provider` for delivery callbacks; None without SMSQ_PUBLIC_URL."""
    base = get_settings().public_url
    if not base:
        return None
    return f"{base.rstrip('/')}/dlr/{provider}/{callback_token(provider)}"


def dlr_url_for(provider: str) -> str | None:
    """The per-message DLR URL to send along, for a gateway whose spec takes one (KING
    SMS PRO), in push or both mode."""
    from worker.gateways.registry import spec

    if not spec(provider).per_message_dlr_url or provider_settings(provider).dlr_mode == "pull":
        return None
    return callback_url(provider)
