"""Warnings a process gives once at start: settings that expose a secret on the wire."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

from producer.callback_policy import address_class, literal_address
from producer.settings import ProviderSettings, provider_names, provider_settings

log = logging.getLogger("smsq.startup")
_warned = False


def stays_on_this_host(host: str) -> bool:
    literal = literal_address(host)
    if literal is not None:
        return address_class(literal) == "a loopback"
    return host == "localhost" or host.endswith(".localhost")


def plaintext_gateways(configured: Mapping[str, ProviderSettings]) -> list[str]:
    """Configured gateways whose base URL is plain http:// to another host: their
    credentials cross the network in clear (a pure rule, for the warning)."""
    found = []
    for name, settings in configured.items():
        parts = urlsplit(settings.base_url or "")
        if not settings.configured or parts.scheme.lower() != "http":
            continue
        if not stays_on_this_host(parts.hostname or ""):
            found.append(name)
    return found


def warn_once() -> list[str]:
    """Log one WARNING per plain-http gateway, the first time a process calls this."""
    global _warned
    if _warned:
        return []
    _warned = True
    names = plaintext_gateways({n: provider_settings(n) for n in provider_names()})
    for name in names:
        log.warning(
            "SMSQ_%s_BASE_URL is plain http://: %s's credentials cross the network "
            "unencrypted; use https:// where the gateway offers it",
            name.upper(),
            name,
        )
    return names
