"""Where a `callback_url` may send smsq's workers: never inside the deployment.

A callback URL is chosen by whoever calls the API, and the workers POST to it
from inside the network, so a URL aimed at 127.0.0.1, the cloud metadata address
or a private range would let a caller reach what only smsq should. The rules
are pure functions; `resolve` is the one function that asks DNS, and the worker
asks it again when posting (the name may resolve elsewhere by then) and
connects to the address it checked (worker.edge.pinned).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], list[Address]]
RESOLVE_TIMEOUT_SECONDS = 3.0

_NETWORKS: tuple[tuple[str, str], ...] = (
    ("an unspecified", "0.0.0.0/8"),
    ("a private", "10.0.0.0/8"),
    ("a carrier-grade NAT", "100.64.0.0/10"),
    ("a loopback", "127.0.0.0/8"),
    ("a link-local", "169.254.0.0/16"),
    ("a private", "172.16.0.0/12"),
    ("a private", "192.168.0.0/16"),
    ("a multicast", "224.0.0.0/4"),
    ("a reserved", "240.0.0.0/4"),
    ("an unspecified", "::/128"),
    ("a loopback", "::1/128"),
    ("a unique-local", "fc00::/7"),
    ("a link-local", "fe80::/10"),
    ("a site-local", "fec0::/10"),
    ("a multicast", "ff00::/8"),
)
REFUSED = tuple((label, ipaddress.ip_network(net)) for label, net in _NETWORKS)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPAT = ipaddress.ip_network("::/96")
# inet_aton's forms that getaddrinfo also takes: 0x7f000001, 2130706433, 0177.0.0.1, 127.1
_LEGACY_V4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)


def embedded_v4(ip: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64, compatible)."""
    if ip.version != 6:
        return None
    assert isinstance(ip, ipaddress.IPv6Address)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_class(ip: Address) -> str | None:
    """'a loopback', 'a private'... when `ip` is inside; None for a public address."""
    for candidate in (ip, embedded_v4(ip)):
        if candidate is None:
            continue
        for label, network in REFUSED:
            if candidate.version == network.version and candidate in network:
                return label
    return None


def literal_address(host: str) -> Address | None:
    """The address `host` spells, in any form a resolver would take; None for a name."""
    bare = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if _LEGACY_V4.match(bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return None


def _getaddrinfo(host: str) -> list[Address]:
    found: list[Address] = []
    for *_, sockaddr in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM):
        ip = literal_address(str(sockaddr[0]))
        if ip is not None and ip not in found:
            found.append(ip)
    return found


_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="smsq-resolve")


def resolve(host: str, timeout: float = RESOLVE_TIMEOUT_SECONDS) -> list[Address]:
    """Every address `host` resolves to; empty when it does not resolve in time."""
    try:
        return _pool.submit(_getaddrinfo, host).result(timeout=timeout)
    except (OSError, UnicodeError, ValueError, FutureTimeout):
        return []


def host_refusal(host: str, resolver: Resolver) -> str | None:
    """Why `host` may not be posted to (it is, or resolves to, an inside address)."""
    literal = literal_address(host)
    for ip in [literal] if literal is not None else resolver(host):
        label = address_class(ip)
        if label is not None:
            verb = "is" if literal is not None else f"resolves to {ip},"
            return f"host {host} {verb} {label} address"
    return None


def url_refusal(url: str, allow_private: bool, resolver: Resolver | None = None) -> str | None:
    """The rule a callback URL breaks, or None. A name that does not resolve now is let
    through: it is resolved and checked again before every POST."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return "must not carry user:password@ (credentials would be stored and logged)"
    host = parts.hostname
    if not host:
        return "has no host"
    try:
        parts.port  # noqa: B018 (raises on a port out of range)
    except ValueError:
        return "has an invalid port"
    if allow_private:
        return None
    refusal = host_refusal(host, resolver or resolve)
    return None if refusal is None else f"{refusal} (SMSQ_CALLBACK_ALLOW_PRIVATE is off)"
