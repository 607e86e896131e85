"""Send-time guard: is a provider's account able to send at all?

An account whose credits have expired or which the gateway reports inactive
must not be called: its messages take the route's fallback or fail with a
clear error instead of burning retries. The balance check (beat) records the
account state in Redis (`record`); `account_block` reads it.

`account_block` runs on every send batch, so it is cheap: one Redis GET per
provider at most every CACHE_SECONDS per process, and it never raises (Redis
down or nothing recorded: None, the gateway has the last word). The stored
expiry is compared with the clock on every call, so credits that expire
between two checks block as soon as they do.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("smsq.guard")

KEY = "smsq:account:{provider}"
CACHE_SECONDS = 5.0
MIN_TTL_SECONDS = 24 * 3600  # a state no check has confirmed for this long is forgotten

_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
_lock = threading.Lock()


def account_block(provider: str) -> str | None:
    """Why `provider` must not be called now (expired, inactive), or None when it may."""
    try:
        return reason(provider, _state(provider), datetime.now(UTC))
    except Exception:  # the guard must never break a send
        log.debug("account guard unavailable for %s", provider, exc_info=True)
        return None


def reason(provider: str, state: dict[str, Any] | None, now: datetime) -> str | None:
    """The block reason for a recorded state (pure, for tests)."""
    if not state:
        return None
    checked = state.get("checked_at") or "the last balance check"
    if state.get("active") is False:
        return f"{provider} account is inactive (balance check at {checked})"
    expires = state.get("expires_at")
    if expires:
        when = datetime.fromisoformat(expires)
        if when <= now:
            return f"{provider} credits expired at {when.isoformat(timespec='seconds')}"
    return None


def record(
    provider: str,
    expires_at: datetime | None,
    active: bool | None,
    checked_at: datetime,
    ttl_seconds: float,
) -> bool:
    """Store what a successful balance check saw, for every process; False if Redis is down.

    This process's cache is refreshed at once; others see it within CACHE_SECONDS.
    """
    state = {
        "expires_at": expires_at.isoformat() if expires_at else None,
        "active": active,
        "checked_at": checked_at.isoformat(timespec="seconds"),
    }
    with _lock:
        _cache[provider] = (time.monotonic(), state)
    try:
        from worker import redis_client

        redis_client.shared().set(
            KEY.format(provider=provider),
            json.dumps(state),
            ex=int(max(ttl_seconds, MIN_TTL_SECONDS)),
        )
    except Exception:
        log.warning("could not record %s's account state for the send guard", provider)
        return False
    return True


def forget_cache() -> None:
    """Drop this process's cache (tests; the next call reads Redis)."""
    with _lock:
        _cache.clear()


def _state(provider: str) -> dict[str, Any] | None:
    now = time.monotonic()
    with _lock:
        hit = _cache.get(provider)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    state: dict[str, Any] | None = None
    try:
        from worker import redis_client

        raw = redis_client.shared().get(KEY.format(provider=provider))
        state = json.loads(raw) if raw else None
    except Exception:
        log.debug("account guard: redis unavailable", exc_info=True)
    with _lock:
        _cache[provider] = (now, state)
    return state
