"""One adapter (and its pooled httpx client) per provider per worker process.

Rebuilt when the provider's settings are reloaded (`reload_settings()`), so a
process that switches configuration (tests, the CLI) never talks to the old
gateway URL with old credentials.
"""

from __future__ import annotations

import threading

from producer.settings import ProviderSettings, provider_settings
from worker.gateways import build_adapter
from worker.gateways.base import ProviderAdapter

_adapters: dict[str, tuple[ProviderSettings, ProviderAdapter]] = {}
_lock = threading.Lock()


def get_adapter(name: str) -> ProviderAdapter:
    settings = provider_settings(name)
    with _lock:
        cached = _adapters.get(name)
        if cached is None or cached[0] is not settings:
            cached = (settings, build_adapter(name, settings))
            _adapters[name] = cached
        return cached[1]
