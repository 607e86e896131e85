"""The one Redis client of a process, on the broker's Redis: the shared state that
every worker, beat and web process on every host must agree on (rate limiter,
circuit breaker, heartbeats, account guard, metrics, the callback secret).

A new client when the broker URL changes (tests and the CLI switch stacks).
"""

from __future__ import annotations

import threading

import redis

_client: redis.Redis | None = None
_client_url: str | None = None
_lock = threading.Lock()
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0


def shared() -> redis.Redis:
    """This process's client on the broker's Redis."""
    global _client, _client_url
    from producer.queues import broker_url

    url = broker_url()
    with _lock:
        if _client is None or _client_url != url:
            if not url.startswith(("redis://", "rediss://", "unix://")):
                raise RuntimeError("smsq's shared state needs a Redis broker (SMSQ_BROKER_URL)")
            _client = redis.Redis.from_url(
                url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT
            )
            _client_url = url
        return _client


def forget() -> None:
    """Drop the client (the next call builds one for the current broker URL)."""
    global _client, _client_url
    with _lock:
        _client, _client_url = None, None
