"""The broker's Redis as a Sentinel group: Celery's form of SMSQ_BROKER_URL,
`sentinel://h1:26379;sentinel://h2:26379` (SMSQ_REDIS_SENTINEL_MASTER names the group,
`mymaster` by default).

Every Redis user follows the group's current master: kombu through its Sentinel
transport (`master_name`), redbeat through its `redis-sentinel` options, and smsq's
own client (`worker.redis_client`: rate limiter, breaker, heartbeats, guard,
metrics, limits, secrets) through redis-py's Sentinel. As in kombu, a password in
the URL (`sentinel://:pw@h1:26379`) is the master's (Redis AUTH) and a `/N` path
its database; SMSQ_REDIS_SENTINEL_PASSWORD, if the sentinels want one of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

SCHEME = "sentinel://"
DEFAULT_PORT = 26379


@dataclass(frozen=True)
class SentinelGroup:
    nodes: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None  # the master's
    sentinel_password: str | None = None  # the sentinels' own, when they have one

    def sentinel_kwargs(self, timeout: float, connect_timeout: float) -> dict[str, Any]:
        """Options of the connections to the sentinels themselves."""
        kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": connect_timeout,
        }
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        return kwargs


def is_sentinel(url: str | None) -> bool:
    return bool(url) and url.strip().startswith(SCHEME)  # type: ignore[union-attr]


@lru_cache(maxsize=8)  # asked on every use of the shared client
def parse(url: str, master: str, sentinel_password: str | None = None) -> SentinelGroup:
    """The group a `sentinel://` broker URL names; ValueError saying what is wrong
    (never echoing the URL: it may hold a password)."""
    if not master.strip():
        raise ValueError("SMSQ_REDIS_SENTINEL_MASTER must name the Sentinel group")
    nodes: list[tuple[str, int]] = []
    db, username, password = 0, None, None
    for n, part in enumerate(p.strip() for p in url.split(";")):
        if not part:
            continue
        where = f"SMSQ_BROKER_URL, part {n + 1}"
        if not part.startswith(SCHEME):
            raise ValueError(
                f"{where}: every part of a Sentinel URL starts with sentinel:// "
                "(sentinel://h1:26379;sentinel://h2:26379)"
            )
        split = urlsplit(part)
        try:
            port = split.port or DEFAULT_PORT
        except ValueError:
            raise ValueError(f"{where}: the port is not a number from 1 to 65535") from None
        if not split.hostname:
            raise ValueError(f"{where}: names no host")
        nodes.append((split.hostname, port))
        path = split.path.strip("/")
        if path:
            if not path.isdigit():
                raise ValueError(f"{where}: the database (/N) must be a number")
            db = int(path)
        username = username or (unquote(split.username) if split.username else None)
        password = password or (unquote(split.password) if split.password else None)
    if not nodes:
        raise ValueError("SMSQ_BROKER_URL names no sentinel")
    return SentinelGroup(tuple(nodes), master.strip(), db, username, password, sentinel_password)


def passwords(url: str | None) -> list[str]:
    """Every password in a (Sentinel or single-server) URL, for log redaction."""
    found = []
    for part in (url or "").split(";"):
        try:
            secret = urlsplit(part.strip()).password
        except ValueError:
            continue
        if secret:
            found += [secret, unquote(secret)]
    return found
