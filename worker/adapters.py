"""One adapter (and its pooled httpx client) per provider per worker process."""

from __future__ import annotations

import threading

from worker.providers import build_adapter
from worker.providers.base import ProviderAdapter

_adapters: dict[str, ProviderAdapter] = {}
_lock = threading.Lock()


def get_adapter(name: str) -> ProviderAdapter:
    with _lock:
        adapter = _adapters.get(name)
        if adapter is None:
            adapter = build_adapter(name)
            _adapters[name] = adapter
        return adapter
