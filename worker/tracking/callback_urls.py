"""Delivery-callback URLs that carry a secret, so forged reports are refused.

The secret is an HMAC of the provider name under SMSQ_CALLBACK_SECRET (or, when
unset, a random key kept in Redis so every process agrees); it sits in the
path, the only part every gateway echoes back unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from producer.settings import get_settings, provider_settings

_KEY = "smsq:callback-secret"
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


def callback_token(provider: str) -> str:
    return hmac.new(_master_secret().encode(), provider.encode(), hashlib.sha256).hexdigest()[:40]


def token_is_valid(provider: str, token: str) -> bool:
    return hmac.compare_digest(callback_token(provider), token or "")


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
