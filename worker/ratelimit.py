"""A global rate limit per provider account, held in Redis across every worker and host.

GCRA (generic cell rate algorithm) in one Lua script that reads Redis `TIME`,
so no worker's clock matters and two workers can never both take the same
slot: requests are spaced 1/R seconds apart, hence at most R in any second.
Celery's own `rate_limit` is per worker instance and cannot do this.
"""

from __future__ import annotations

import threading
import time

import redis

from producer.queues import broker_url

_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > 0 then
  return tat - now
end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.floor(interval / 1000) + 1000)
return 0
"""

_client: redis.Redis | None = None
_lock = threading.Lock()


def _redis() -> redis.Redis:
    global _client
    with _lock:
        if _client is None:
            url = broker_url()
            if not url.startswith(("redis://", "rediss://", "unix://")):
                raise RuntimeError("the global rate limiter needs a Redis broker")
            _client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        return _client


class RateLimiter:
    """`try_acquire()` returns 0 when a request may go now, else the seconds to wait."""

    def __init__(self, key: str, rate_per_second: float, client: redis.Redis | None = None):
        self.key = f"smsq:rate:{key}"
        self.interval_us = int(1_000_000 / rate_per_second)
        self._client = client
        self._script = None

    def _script_for(self):  # type: ignore[no-untyped-def]
        if self._script is None:
            self._script = (self._client or _redis()).register_script(_GCRA)
        return self._script

    def try_acquire(self) -> float:
        wait_us = int(self._script_for()(keys=[self.key], args=[self.interval_us]))
        return wait_us / 1_000_000

    def acquire(self, max_wait: float) -> float:
        """Wait up to `max_wait` seconds for a slot; 0 when taken, else the wait still due."""
        deadline = time.monotonic() + max_wait
        while True:
            wait = self.try_acquire()
            if wait <= 0:
                return 0.0
            if time.monotonic() + wait > deadline:
                return wait
            time.sleep(wait)
