"""A global rate limit per provider account, held in Redis across every worker and host.

The promise is the gateway's: never more than R requests in any 1-second
sliding window *as the gateway sees them*. Spacing grants 1/R apart (GCRA)
does not keep it: R+1 grants then span exactly one second, and any jitter
between a grant and the request's arrival squeezes them into one window.

So this is a sliding-window log (a Redis sorted set per account) in which a
request occupies its slot from its grant until one window after its
*response*: the gateway received the request somewhere between the two, so a
new grant at least one window after the R-th previous response can never make
R+1 arrivals in one second, whatever the latency or jitter. The cost is the
request latency once per R requests: utilisation is about 1 / (1 + latency).

- Every decision is one Lua script reading Redis `TIME`: no worker's clock
  matters and two workers on two hosts can never take the same slot.
- A request still in flight (granted, no response yet) counts as occupying its
  slot; if its worker dies, the slot frees `hold` seconds after the grant
  (the HTTP timeout, after which the request cannot still be arriving).
- Grants are also spaced at least `0.8 / R` apart, so a backlog leaves as a
  steady stream rather than bursts of R.
- Priorities are strict where the limit binds: a request that must wait
  registers as a waiter of its rank (0 high, 1 normal, 2 bulk) until its next
  poll is due (plus `WAITER_GRACE`), and no request is granted while a waiter of
  a better rank is registered: across every worker, a one-time code takes the
  next slot before any campaign's request, normal before bulk. A waiter that
  gives up leaves at once; one that dies lapses after its grace.
- The response is stamped by an httpx response hook on the adapter's client
  (`stamp_responses_of`), in the thread that took the grant; a grant whose
  request never got a response is stamped when that thread asks again (its
  request is over by then), or expires after `hold`.
Celery's own `rate_limit` is per worker instance and cannot do this.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from typing import Any

import redis

from worker import redis_client

WINDOW_SECONDS = 1.0
SPACING = 0.8  # minimum gap between two grants, as a fraction of 1/R
PENDING_POLL_SECONDS = 0.25  # re-check this often while the slot due next is in flight
REDIS_DOWN_WAIT = 0.25
WAITER_GRACE = 0.5  # a waiter that has not polled again this long after it was due is gone
RANKS = 3  # high, normal, bulk (producer.traffic.RANK)

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local gap = tonumber(ARGV[3])
local hold = tonumber(ARGV[4])
local rank = tonumber(ARGV[6])
local grace = tonumber(ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local wait = 0
local pending = 0
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then
  local entry = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
  local at = tonumber(entry[2])
  wait = at + window - now
  if at > now then pending = 1 end
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if last + gap - now > wait then wait = last + gap - now end
local ahead = 0
for r = 0, rank - 1 do
  redis.call('ZREMRANGEBYSCORE', KEYS[3 + r], '-inf', now)
  ahead = ahead + redis.call('ZCARD', KEYS[3 + r])
end
if ahead > 0 then
  if wait < 0 then wait = 0 end
  wait = wait + gap
end
if wait > 0 then
  redis.call('ZADD', KEYS[3 + rank], now + wait + grace, ARGV[7])
  local ttl = math.floor((wait + grace) / 1000) + 1000
  if redis.call('PTTL', KEYS[3 + rank]) < ttl then redis.call('PEXPIRE', KEYS[3 + rank], ttl) end
  return {wait, pending}
end
redis.call('ZREM', KEYS[3 + rank], ARGV[7])
redis.call('ZADD', KEYS[1], now + hold, ARGV[5])
redis.call('PEXPIRE', KEYS[1], math.floor((window + hold) / 1000) + 1000)
redis.call('SET', KEYS[2], now, 'PX', math.floor(gap / 1000) + 1000)
return {0, 0}
"""

_STAMP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if at and tonumber(at) > now then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  return 1
end
return 0
"""

_lock = threading.Lock()
_local = threading.local()  # per thread: {limiter key: (limiter, token)} of unstamped grants
_tokens = itertools.count(1)
_hooked: set[int] = set()  # id() of httpx clients that stamp responses


_stopping = threading.Event()  # the worker is shutting down: no thread waits for a slot


def stop_waiting() -> None:
    """Warm shutdown: sends waiting for a slot give up now (their rows are handed back),
    so the worker stops within seconds instead of after every wait."""
    _stopping.set()


def _waiter_id() -> str:
    return f"{os.getpid()}:{threading.get_ident()}:w{next(_tokens)}"


def _pending() -> dict[str, tuple[RateLimiter, str]]:
    grants = getattr(_local, "grants", None)
    if grants is None:
        grants = _local.grants = {}
    return grants


class RateLimiter:
    """At most `rate_per_second` requests in any `window` seconds, across every process.

    `try_acquire()` returns 0 when a request may go now (the slot is taken),
    else the seconds to wait; `acquire(max_wait)` waits for a slot; `stamp()`
    records that this thread's last granted request has had its answer.
    """

    def __init__(
        self,
        key: str,
        rate_per_second: float,
        client: redis.Redis | None = None,
        *,
        hold: float = 30.0,
        window: float = WINDOW_SECONDS,
    ) -> None:
        self.key = f"smsq:rate:{key}"
        self.limit = max(1, int(rate_per_second * window))
        self.window_us = int(window * 1_000_000)
        self.gap_us = int(SPACING * 1_000_000 / rate_per_second)
        self.hold_us = int(max(hold, window) * 1_000_000)
        self.waiting_keys = [f"{self.key}:waiting:{rank}" for rank in range(RANKS)]
        self._client = client
        self._scripts: dict[str, Any] = {}

    def _script(self, source: str):  # type: ignore[no-untyped-def]
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = (
                self._client or redis_client.shared()
            ).register_script(source)
        return script

    def try_acquire(self, rank: int = 1) -> float:
        return self._try(rank, _waiter_id())[0]

    def _try(self, rank: int = 1, waiter: str | None = None) -> tuple[float, bool]:
        """(0, False) with the slot taken, else (seconds to wait, whether the slot due next
        belongs to a request still in flight, whose response will bring it nearer).
        Waiting registers `waiter` at `rank`, which holds back every worse rank."""
        self.stamp()  # this thread's previous request, if any, is over
        window = self.window_us / 1_000_000
        held = redis_client.failover_hold(window)  # a new master may miss the last grants
        if held > 0:
            return held, False
        waiter = waiter or _waiter_id()
        token = f"{os.getpid()}:{threading.get_ident()}:{next(_tokens)}"
        try:
            wait_us, pending = self._script(_ACQUIRE)(
                keys=[self.key, f"{self.key}:last", *self.waiting_keys],
                args=[
                    self.limit,
                    self.window_us,
                    self.gap_us,
                    self.hold_us,
                    token,
                    min(max(rank, 0), RANKS - 1),
                    waiter,
                    int(WAITER_GRACE * 1_000_000),
                ],
            )
        except redis.RedisError:  # Redis down: no slot, try again shortly
            return REDIS_DOWN_WAIT, False
        held = redis_client.failover_hold(window)
        if held > 0:  # the master changed during this call: its grant is not used (it
            return held, False  # holds its slot until `hold`: the slow side)
        if int(wait_us) <= 0:
            _pending()[self.key] = (self, token)
            return 0.0, False
        return int(wait_us) / 1_000_000, bool(pending)

    def _leave(self, rank: int, waiter: str) -> None:
        """A waiter that gives up stops holding back the worse ranks at once."""
        with contextlib.suppress(redis.RedisError):  # else it lapses after its grace
            (self._client or redis_client.shared()).zrem(self.waiting_keys[rank], waiter)

    def stamp(self) -> None:
        """The request of this thread's last grant is answered: its slot frees one window on."""
        held = _pending().pop(self.key, None)
        if held is None:
            return
        with contextlib.suppress(redis.RedisError):  # else the slot frees `hold` after grant
            self._script(_STAMP)(keys=[self.key], args=[held[1]])

    def acquire(self, max_wait: float, rank: int = 1) -> float:
        """Wait up to `max_wait` seconds for a slot, as a request of `rank` (0 is served
        first); 0 when taken, else the wait still due (an estimate of one window when the
        slot due next belongs to a request in flight). A worker shutting down
        (`stop_waiting`) stops waiting at once."""
        rank = min(max(rank, 0), RANKS - 1)
        waiter = _waiter_id()
        deadline = time.monotonic() + max_wait
        while True:
            wait, in_flight = self._try(rank, waiter)
            if wait <= 0:
                return 0.0
            if in_flight:
                wait = min(wait, self.window_us / 1_000_000)
            left = deadline - time.monotonic()
            if left <= 0 or (not in_flight and wait > left) or _stopping.is_set():
                self._leave(rank, waiter)
                return wait
            if _stopping.wait(min(wait, left, PENDING_POLL_SECONDS) if in_flight else wait):
                self._leave(rank, waiter)
                return wait

    def stamp_responses_of(self, http_client: Any) -> None:
        """Stamp this limiter's grants when `http_client` (an httpx.Client) gets a response."""
        with _lock:
            if id(http_client) in _hooked:
                return
            _hooked.add(id(http_client))
        key = self.key

        def on_response(response: Any) -> None:
            held = _pending().get(key)
            if held is not None:
                held[0].stamp()

        http_client.event_hooks["response"].append(on_response)


_limiters: dict[tuple[str, float, float], RateLimiter] = {}


def limiter_for(key: str, rate_per_second: float, hold: float = 30.0) -> RateLimiter:
    """One limiter per account and settings in this process (its scripts registered once)."""
    with _lock:
        limiter = _limiters.get((key, rate_per_second, hold))
        if limiter is None:
            limiter = _limiters[(key, rate_per_second, hold)] = RateLimiter(
                key, rate_per_second, hold=hold
            )
        return limiter
