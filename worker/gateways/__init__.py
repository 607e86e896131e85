"""Gateway adapters, one module each, behind `ProviderAdapter`."""

from __future__ import annotations

import importlib

import httpx

from producer.settings import PROVIDER_NAMES, ProviderSettings, provider_settings
from worker.gateways.base import (
    Balance,
    OutgoingMessage,
    PermanentProviderError,
    ProviderAdapter,
    ProviderError,
    RetryableProviderError,
    SendResult,
    StatusReport,
)

_MODULES = {
    "keccel": ("worker.gateways.keccel.adapter", "KeccelAdapter"),
    "smsclub": ("worker.gateways.smsclub.adapter", "SmsClubAdapter"),
    "kingsms": ("worker.gateways.kingsms.adapter", "KingSmsAdapter"),
    "sms1601": ("worker.gateways.sms1601.adapter", "Sms1601Adapter"),
}


def adapter_class(name: str) -> type[ProviderAdapter]:
    if name not in _MODULES:
        raise KeyError(f"unknown provider {name!r}; known: {', '.join(PROVIDER_NAMES)}")
    module, cls = _MODULES[name]
    return getattr(importlib.import_module(module), cls)


def build_adapter(
    name: str, settings: ProviderSettings | None = None, client: httpx.Client | None = None
) -> ProviderAdapter:
    """An adapter for `name` from the SMSQ_<P>_* settings."""
    cls = adapter_class(name)
    return cls.from_settings(settings or provider_settings(name), client=client)  # type: ignore[attr-defined]


__all__ = [
    "Balance",
    "OutgoingMessage",
    "PermanentProviderError",
    "ProviderAdapter",
    "ProviderError",
    "RetryableProviderError",
    "SendResult",
    "StatusReport",
    "adapter_class",
    "build_adapter",
]
