"""Choose the provider of a message: named, by SMSQ_ROUTES country prefix, or the default.

SMSQ_ROUTES = "243=keccel,228=kingsms,380=smsclub,*=sms1601"; a route may list
fallbacks tried in order when its first provider is down: "243=keccel|sms1601".
The longest matching prefix wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from producer.errors import InvalidMessage
from producer.settings import get_settings, provider_names, provider_settings


@dataclass(frozen=True)
class Route:
    prefix: str  # digits, or "*" for every number
    providers: tuple[str, ...]


def parse_routes(value: str | None) -> list[Route]:
    """Parse SMSQ_ROUTES; a bad entry raises ValueError naming it."""
    routes: list[Route] = []
    if not value:
        return routes
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            continue
        prefix, sep, names = entry.partition("=")
        prefix = prefix.strip().lstrip("+")
        if not sep or not (prefix == "*" or prefix.isdigit()):
            raise ValueError(f"SMSQ_ROUTES: {entry!r} should look like 243=keccel|sms1601")
        providers = tuple(n.strip().lower() for n in names.split("|") if n.strip())
        unknown = [n for n in providers if n not in provider_names()]
        if not providers or unknown:
            raise ValueError(
                f"SMSQ_ROUTES: {entry!r} names unknown provider(s) {unknown}; "
                f"known: {', '.join(provider_names())}"
            )
        routes.append(Route(prefix, providers))
    return sorted(routes, key=lambda r: (r.prefix == "*", -len(r.prefix)))


def match_route(number: str, routes: list[Route]) -> Route | None:
    for route in routes:
        if route.prefix == "*" or number.startswith(route.prefix):
            return route
    return None


def choose_providers(number: str, provider: str | None) -> tuple[str, ...]:
    """The provider then its fallbacks for `number`; InvalidMessage when none is usable."""
    settings = get_settings()
    try:
        routes = parse_routes(settings.routes)
    except ValueError as exc:
        raise InvalidMessage("provider", str(exc)) from None
    route = match_route(number, routes)
    if provider is not None:
        chain = (provider,)
        if route and route.providers[0] == provider:
            chain = route.providers
    elif route is not None:
        chain = route.providers
    elif settings.default_provider:
        chain = (settings.default_provider.strip().lower(),)
    else:
        configured = settings.configured_providers()
        if not configured:
            raise InvalidMessage(
                "provider",
                "no provider is configured (set the credentials of one, e.g. SMSQ_KECCEL_TOKEN)",
            )
        chain = (configured[0],)
    for name in chain:
        if name not in provider_names():
            raise InvalidMessage("provider", f"unknown provider {name!r}")
    if not provider_settings(chain[0]).configured:
        raise InvalidMessage(
            "provider",
            f"{chain[0]} is not configured: set its credentials (SMSQ_{chain[0].upper()}_...)",
        )
    return tuple(n for i, n in enumerate(chain) if i == 0 or provider_settings(n).configured)
