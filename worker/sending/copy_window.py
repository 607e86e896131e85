"""How long a resend is still refused as a copy by a gateway with a duplicate window.

SMSClub answers 453 to the same message (number, text, sender) within 2 minutes
of the first, so while that window lasts, resending a message whose earlier
request may or may not have reached it is safe: a copy it has is refused, one
it never got is sent. Past the window a resend could be a second SMS. The
window counts from the first request that may have reached the gateway, and
ends early by the request's timeout and a margin (clocks, the request's own
time on the wire).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from producer.settings import provider_settings
from worker.gateways.base import ProviderAdapter

MARGIN_SECONDS = 5.0


def refused_until(adapter: ProviderAdapter, provider: str, first: datetime) -> datetime | None:
    """Until when a resend of what was first requested at `first` is refused as a copy;
    None when the gateway refuses no copies (no window: never safe)."""
    window = adapter.duplicate_window_seconds
    if not window:
        return None
    margin = provider_settings(provider).timeout_seconds + MARGIN_SECONDS
    return first + timedelta(seconds=window - margin)
