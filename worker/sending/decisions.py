"""The send path's decisions, as pure functions: no store, no Redis, no clock of
their own. The path (`worker.sending.send`) gathers the facts, these decide, and
the writers (`worker.sending.record`, `worker.sending.divert`) apply the result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from producer.queues import MAX_COUNTDOWN


def past_validity(expires_at: datetime | None, now: datetime) -> bool:
    """A message whose ttl has run out (`expires_at`) must never reach a gateway: checked
    at claim time and again just before the request, whatever held it until then."""
    return expires_at is not None and now >= expires_at


def expired_ids(rows: Sequence[tuple[str, datetime | None]], now: datetime) -> set[str]:
    """Of (id, expires_at) pairs, the ids past their validity at `now`."""
    return {message_id for message_id, expires in rows if past_validity(expires, now)}


def fallback_list(fallbacks: str | None) -> list[str]:
    return [n.strip() for n in (fallbacks or "").split(",") if n.strip()]


def pick_fallback(
    current: str,
    fallbacks: str | None,
    maybe_sent: bool,
    why_not: Callable[[str], str | None],
) -> tuple[str | None, list[str]]:
    """The first fallback that may take a message now, and why the others before it may
    not. `why_not(name)` says why a gateway cannot take it (None: it can); a message
    whose answer was lost is never rerouted (the first gateway may have it)."""
    if maybe_sent:
        return None, [f"none: {current} may have it already (an answer was lost)"]
    skipped: list[str] = []
    for name in fallback_list(fallbacks):
        if name == current:
            continue
        reason = why_not(name)
        if reason is None:
            return name, skipped
        skipped.append(reason)
    return None, skipped


def fallbacks_after_reroute(fallbacks: str | None, target: str, origin: str) -> str:
    """The fallbacks a rerouted message keeps: without its new gateway, the one it
    left at the end (tried again if the new one fails too)."""
    rest = [n for n in fallback_list(fallbacks) if n != target]
    return ",".join(rest if origin in rest else [*rest, origin])


@dataclass(frozen=True)
class Retry:
    """What to do after a retryable error: give up, or try again after `delay`."""

    give_up: bool
    attempts: int  # the attempt count to store (a throttled try is given back)
    delay: float
    next_attempt_at: datetime | None  # when beat takes it up, if the broker does not
    requeue: bool  # queue it again with a countdown now (a short delay)


def counted_attempts(attempts: int, throttled: bool) -> int:
    """A 429 is back-pressure, not an attempt: the claim's count is given back."""
    return attempts - (1 if throttled else 0)


def retry_plan(
    *,
    attempts: int,
    throttled: bool,
    delay: float,
    created_at: datetime,
    now: datetime,
    max_attempts: int,
    deadline_seconds: float,
    sweep_after_seconds: float,
) -> Retry:
    """Retry after `delay`, unless the attempts or the retry deadline are used up (a
    throttled try always waits). A short delay is a broker countdown, with beat's
    sweep as the safety net after it; a long one lives in the store until due."""
    deadline = created_at + timedelta(seconds=deadline_seconds)
    if not throttled and (attempts >= max_attempts or now + timedelta(seconds=delay) > deadline):
        return Retry(True, attempts, delay, None, False)
    short = delay <= MAX_COUNTDOWN
    after = delay + (sweep_after_seconds if short else 0.0)
    return Retry(False, attempts, delay, now + timedelta(seconds=after), short)


@dataclass(frozen=True)
class Hold:
    """A message its gateway may not take now and no fallback can: wait or fail."""

    fail: str | None  # the error, when it fails
    next_attempt_at: datetime | None
    requeue: bool


def hold_plan(
    *,
    reason: str,
    skipped: list[str],
    wait: float | None,
    created_at: datetime,
    now: datetime,
    deadline_seconds: float,
    sweep_after_seconds: float,
) -> Hold:
    """`wait` None (a blocked account): fail now, with the reason. Otherwise wait out
    the cool-down, unless that passes the retry deadline."""
    why = f"; fallbacks: {', '.join(skipped)}" if skipped else ""
    if wait is None:
        return Hold(f"not sent: {reason}{why or '; no fallback'}", None, False)
    if now + timedelta(seconds=wait) > created_at + timedelta(seconds=deadline_seconds):
        return Hold(f"gave up: {reason} past the retry deadline{why}", None, False)
    short = wait <= MAX_COUNTDOWN
    after = wait + (sweep_after_seconds if short else 0.0)
    return Hold(None, now + timedelta(seconds=after), short)
