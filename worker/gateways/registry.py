"""The one list of gateways, and what is derived from it: names, specs, adapters.

`BUILT_IN` names the packages of the four gateways; each holds its `SPEC`
(`worker.gateways.spec.GatewaySpec`). `SMSQ_GATEWAY_PLUGINS` (a comma list of
modules with a `SPEC`) adds others in every process; `register()` adds one in
this process only. Everything else that needs "the gateways"
(settings, limits, validation, the CLI's choices, the sandbox, the local stack)
asks here, so a gateway is added in its own package and nowhere else.

One adapter (and its pooled httpx client) per gateway per process, rebuilt when
the gateway's settings are reloaded (`reload_settings()`), so a process that
switches configuration (tests, the CLI) never talks to an old URL with old
credentials.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import TYPE_CHECKING

from worker.gateways.spec import GatewaySpec

if TYPE_CHECKING:
    import httpx

    from producer.settings import ProviderSettings
    from worker.gateways.base import ProviderAdapter

BUILT_IN: tuple[str, ...] = (
    "worker.gateways.keccel",
    "worker.gateways.smsclub",
    "worker.gateways.kingsms",
    "worker.gateways.sms1601",
)

PLUGINS_VARIABLE = "SMSQ_GATEWAY_PLUGINS"

_specs: dict[str, GatewaySpec] = {}
_imported: set[str] = set()
_lock = threading.RLock()
_adapters: dict[str, tuple[ProviderSettings, ProviderAdapter]] = {}


def _loaded() -> dict[str, GatewaySpec]:
    """The specs, importing the built-in packages and any plugin not yet imported.
    (The plugin list is read from the environment, not from `Settings`: settings are
    built from the specs, so they cannot name them.)"""
    plugins = [m.strip() for m in os.environ.get(PLUGINS_VARIABLE, "").split(",") if m.strip()]
    with _lock:
        for module in (*BUILT_IN, *plugins):
            if module not in _imported:
                spec: GatewaySpec = importlib.import_module(module).SPEC
                _specs[spec.name] = spec
                _imported.add(module)
        return _specs


def names() -> tuple[str, ...]:
    """Every gateway's name, built-in ones first, in the order they were added."""
    return tuple(_loaded())


def specs() -> list[GatewaySpec]:
    return list(_loaded().values())


def spec(name: str) -> GatewaySpec:
    try:
        return _loaded()[name]
    except KeyError:
        raise KeyError(f"unknown provider {name!r}; known: {', '.join(names())}") from None


def register(new: GatewaySpec) -> None:
    """Add a gateway (settings caches are cleared so it is seen at once)."""
    from producer.settings import reload_settings

    with _lock:
        _loaded()[new.name] = new
    reload_settings()


def unregister(name: str) -> None:
    from producer.settings import reload_settings

    with _lock:
        _loaded().pop(name, None)
        _adapters.pop(name, None)
    reload_settings()


def adapter_class(name: str) -> type[ProviderAdapter]:
    return spec(name).adapter_class()


def build_adapter(
    name: str, settings: ProviderSettings | None = None, client: httpx.Client | None = None
) -> ProviderAdapter:
    """An adapter for `name` from its SMSQ_<P>_* settings."""
    from producer.settings import provider_settings

    return adapter_class(name).from_settings(settings or provider_settings(name), client=client)


def get_adapter(name: str) -> ProviderAdapter:
    """This process's adapter for `name`, built again when its settings were reloaded."""
    from producer.settings import provider_settings

    settings = provider_settings(name)
    with _lock:
        cached = _adapters.get(name)
        if cached is None or cached[0] is not settings:
            cached = (settings, build_adapter(name, settings))
            _adapters[name] = cached
        return cached[1]
