"""The one exponential backoff: base doubling per attempt up to a cap, with equal
jitter where many clients would otherwise retry in step, and a `Retry-After`
that wins when the other side gave one (kept within bounds)."""

from __future__ import annotations

import random


def ceiling(attempt: int, base: float, cap: float) -> float:
    """`base` doubled for each attempt after the first, at most `cap`."""
    return min(cap, base * 2 ** max(0, attempt - 1))


def delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: bool = True,
    retry_after: float | None = None,
    retry_after_bounds: tuple[float, float] = (0.0, float("inf")),
) -> float:
    """Seconds before try `attempt + 1`: `Retry-After` (clamped to its bounds) when
    given, else the ceiling, with equal jitter (half fixed, half random) if asked."""
    if retry_after is not None:
        low, high = retry_after_bounds
        return max(low, min(retry_after, high))
    top = ceiling(attempt, base, cap)
    return top / 2 + random.uniform(0, top / 2) if jitter else top
