"""Limits that stop pumping: recipients per API key, messages per number.

Counted with the `limits` library's moving window in the broker's Redis, so every
web process and every producer on every host shares one count. A moving-window
hit is one atomic Lua script that adds nothing when it would pass the limit, so
concurrent requests never overshoot any one limit; with several limits (e.g.
`100/minute;20000/day`) each is checked, then taken in turn, and a request refused
by a later limit after an earlier one was taken has used some of the earlier one
(the caller loses a little budget, never gains any).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from limits import RateLimitItem, parse_many
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from producer.errors import EnqueueError

log = logging.getLogger("smsq.quotas")
OFF = "off"
KEY_SCOPE = "smsq-key"
NUMBER_SCOPE = "smsq-to"


class LimitsUnavailable(EnqueueError):
    """The shared counters (the broker's Redis) could not be reached: nothing was stored."""


@dataclass(frozen=True)
class Refusal:
    """Why a limit refused: the limit as written, and seconds until it may pass."""

    limit: str
    retry_after: int


def parse_limit(value: str, setting: str) -> list[RateLimitItem]:
    """`100/minute;20000/day` into limits; `off` (or empty) into none."""
    text = value.strip()
    if not text or text.lower() == OFF:
        return []
    try:
        return list(parse_many(text))
    except ValueError:
        raise ValueError(
            f"{setting}: {value!r} is not a limit like '100/minute;20000/day' (or 'off')"
        ) from None


def retry_after(reset_at: float, now: float) -> int:
    """Whole seconds until `reset_at`, at least 1 (a Retry-After of 0 invites a storm)."""
    return max(1, math.ceil(reset_at - now))


def too_big(items: Sequence[RateLimitItem], cost: int) -> RateLimitItem | None:
    """The first limit that `cost` passes on its own: waiting would never help."""
    return next((item for item in items if cost > item.amount), None)


_limiter: MovingWindowRateLimiter | None = None
_limiter_client: redis.Redis | None = None
_lock = threading.Lock()


def limiter() -> MovingWindowRateLimiter:
    """A moving-window limiter on the process's one Redis client (worker.redis_client)."""
    global _limiter, _limiter_client
    from worker import redis_client

    client = redis_client.shared()
    with _lock:
        if _limiter is None or _limiter_client is not client:
            storage = RedisStorage("redis://", connection_pool=client.connection_pool)
            _limiter, _limiter_client = MovingWindowRateLimiter(storage), client
        return _limiter


@contextmanager
def reachable() -> Iterator[None]:
    """Redis errors inside the block become LimitsUnavailable (no URL, no password)."""
    try:
        yield
    except (redis.RedisError, OSError) as exc:
        raise LimitsUnavailable(
            f"the rate-limit counters are unreachable ({type(exc).__name__}); nothing was "
            "stored or queued"
        ) from None


def take(items: Sequence[RateLimitItem], identifier: str, cost: int, scope: str) -> Refusal | None:
    """Take `cost` from every limit of `identifier`: None when taken, else the refusal.
    Raises LimitsUnavailable when Redis cannot be reached."""
    with reachable():
        strategy = limiter()
        for item in items:
            if not strategy.test(item, scope, identifier, cost=cost):
                return _refusal(strategy, item, (scope, identifier))
        for item in items:
            if not strategy.hit(item, scope, identifier, cost=cost):
                return _refusal(strategy, item, (scope, identifier))
    return None


def _refusal(
    strategy: MovingWindowRateLimiter, item: RateLimitItem, identifiers: tuple[str, str]
) -> Refusal:
    reset_at = strategy.get_window_stats(item, *identifiers).reset_time
    return Refusal(str(item), retry_after(reset_at, time.time()))


def _test(items: Sequence[RateLimitItem], identifier: str, cost: int, scope: str) -> Refusal | None:
    with reachable():
        strategy = limiter()
        for item in items:
            if not strategy.test(item, scope, identifier, cost=cost):
                return _refusal(strategy, item, (scope, identifier))
    return None


def take_numbers(items: Sequence[RateLimitItem], numbers: Iterable[str]) -> dict[str, Refusal]:
    """Messages per number: every number is checked before any is taken, so a refused
    call takes nothing (unless another call took the same number in between). The
    refused numbers and why; empty when all were taken."""
    counts = Counter(numbers)
    if not items:
        return {}
    refused = {
        n: r for n, c in counts.items() if (r := _test(items, n, c, NUMBER_SCOPE)) is not None
    }
    if refused:
        return refused
    for number, count in counts.items():
        refusal = take(items, number, count, NUMBER_SCOPE)
        if refusal is not None:
            refused[number] = refusal
    return refused
