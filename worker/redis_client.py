"""The one Redis client of a process, on the broker's Redis: the shared state that
every worker, beat and web process on every host must agree on (rate limiter,
circuit breaker, heartbeats, reserved tasks, account guard, metrics, the limits'
counters, the callback secret).

With a Sentinel broker URL (`producer.sentinel`) the client is redis-py's
Sentinel-managed one: every new connection asks the sentinels for the current
master, so after a failover each use reaches the promoted replica.
`failover_hold` tells the rate limiter that the master has just changed: state
written on the old master in its last moments may not have reached the new
one, so it waits one window before granting again.

A new client when the broker URL changes (tests and the CLI switch stacks).
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from redis.sentinel import Sentinel

log = logging.getLogger("smsq.redis")
_client: redis.Redis | None = None
_client_key: tuple[str, str | None] | None = None
_lock = threading.Lock()
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0

_master_seen: tuple[str, int] | None = None  # the Sentinel master this process last used
_switched_at = float("-inf")  # time.monotonic() when it saw the master change


def shared() -> redis.Redis:
    """This process's client on the broker's Redis (its current master)."""
    global _client, _client_key
    from producer.queues import broker_url, sentinel_group

    url = broker_url()
    group = sentinel_group()
    key = (url, group.master if group else None)
    with _lock:
        if _client is None or _client_key != key:
            if group is not None:
                _client = Sentinel(
                    list(group.nodes),
                    sentinel_kwargs=group.sentinel_kwargs(SOCKET_TIMEOUT, CONNECT_TIMEOUT),
                ).master_for(
                    group.master,
                    socket_timeout=SOCKET_TIMEOUT,
                    socket_connect_timeout=CONNECT_TIMEOUT,
                    username=group.username,
                    password=group.password,
                    db=group.db,
                )
            elif url.startswith(("redis://", "rediss://", "unix://")):
                _client = redis.Redis.from_url(
                    url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT
                )
            else:
                raise RuntimeError(
                    "smsq's shared state needs a Redis broker (SMSQ_BROKER_URL: redis://, "
                    "rediss://, unix:// or sentinel://)"
                )
            _client_key = key
            _forget_master()
        return _client


def failover_hold(window: float) -> float:
    """Seconds left of `window` since this process saw the Sentinel master change
    (0 without Sentinel, or when the change is older). Cheap: reads the address the
    client's pool last connected to."""
    global _master_seen, _switched_at
    with _lock:
        client = _client
        address = getattr(client.connection_pool, "master_address", None) if client else None
        now = time.monotonic()
        if address is not None and address != _master_seen:
            if _master_seen is not None:
                _switched_at = now
                log.warning(
                    "the Redis master changed (Sentinel failover, %s:%s -> %s:%s): rate-limit "
                    "grants wait %.1f s",
                    *_master_seen,
                    *address,
                    window,
                )
            _master_seen = address
        return max(0.0, _switched_at + window - now)


def _forget_master() -> None:
    global _master_seen, _switched_at
    _master_seen, _switched_at = None, float("-inf")


def forget() -> None:
    """Drop the client (the next call builds one for the current broker URL)."""
    global _client, _client_key
    with _lock:
        _client, _client_key = None, None
        _forget_master()
