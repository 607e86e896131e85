"""Send queued messages: claim, respect the global rate, call the gateway, store the answer.

The order is what makes a send exactly-once:
1. claim each row with a conditional UPDATE `queued -> sending` (a redelivered
   task finds nothing to claim and does nothing);
2. take a slot from the provider's global rate limiter (a long wait hands the
   rows back to the queue, without counting an attempt);
3. one HTTP request per gateway batch;
4. store the answer (sent with the gateway id, rejected, retry later, failed)
   before the task returns and is acked.
An unexpected error after the request leaves the row in `sending`: it is an
uncertain send, settled by the sweep under SMSQ_UNCERTAIN_SEND, never resent
silently.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import select

from producer import db
from producer.api import gateway_schedules
from producer.limits import LIMITS
from producer.models import Message, utcnow
from producer.queues import MAX_COUNTDOWN
from producer.settings import get_settings, provider_settings
from producer.status import Status
from worker import metrics
from worker.adapters import get_adapter
from worker.callbacks import dlr_url_for
from worker.polling import first_poll_at
from worker.providers.base import (
    OutgoingMessage,
    PermanentProviderError,
    RetryableProviderError,
    SendResult,
)
from worker.ratelimit import RateLimiter
from worker.transitions import claim, load_rows, move, record_event

log = logging.getLogger("smsq.sending")

# Waits for a rate-limit slot up to this long happen in the task; longer ones re-queue.
MAX_RATE_WAIT = 1.0

Requeue = Callable[[list[str], float], None]


@dataclass
class SendOutcome:
    claimed: int = 0
    sent: int = 0
    rejected: int = 0
    failed: int = 0
    retry_in: float | None = None


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with equal jitter, capped; `Retry-After` wins when given."""
    if retry_after is not None:
        return max(0.0, retry_after)
    settings = get_settings()
    ceiling = min(
        settings.retry_cap_seconds, settings.retry_base_seconds * 2 ** max(0, attempt - 1)
    )
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _outgoing(row: Message) -> OutgoingMessage:
    return OutgoingMessage(
        ref=row.id,
        to=row.to,
        text=row.text,
        sender=row.sender,
        encoding=row.encoding,
        segments=row.segments,
        flash=row.flash,
        dlr_url=dlr_url_for(row.provider),
        send_at=row.send_at if row.send_at and gateway_schedules(row.provider) else None,
    )


def send_messages(ids: Sequence[str], requeue: Requeue) -> SendOutcome:
    """Send the messages `ids` (one provider); `requeue(ids, countdown)` queues a later try."""
    outcome = SendOutcome()
    now = utcnow()
    with db.session() as s:
        claimed = [mid for mid in dict.fromkeys(ids) if claim(s, mid, now)]
        s.commit()
        if not claimed:
            return outcome
        rows = list(s.exec(select(Message).where(Message.id.in_(claimed))))  # type: ignore[union-attr]
    outcome.claimed = len(rows)
    by_provider: dict[str, list[Message]] = {}
    for row in rows:
        by_provider.setdefault(row.provider, []).append(row)
    for provider, group in by_provider.items():
        size = LIMITS[provider].max_batch
        for start in range(0, len(group), size):
            _send_batch(provider, group[start : start + size], requeue, outcome)
    return outcome


def _send_batch(provider: str, rows: list[Message], requeue: Requeue, outcome: SendOutcome) -> None:
    wait = _rate_wait(provider)
    if wait > 0:
        _hand_back(rows, wait, requeue, note=f"rate limit: next slot in {wait:.2f}s")
        outcome.retry_in = wait
        return
    adapter = get_adapter(provider)
    try:
        results = adapter.send([_outgoing(r) for r in rows])
    except RetryableProviderError as exc:
        metrics.SEND_ERRORS.labels(provider, "retryable").inc()
        outcome.retry_in = _retry_later(rows, exc, requeue)
        return
    except PermanentProviderError as exc:
        metrics.SEND_ERRORS.labels(provider, "permanent").inc()
        _fail(rows, str(exc), raw=exc.raw)
        outcome.failed += len(rows)
        return
    except Exception as exc:  # a bug or a surprise after the request: uncertain
        log.exception("unexpected error sending %d message(s) via %s", len(rows), provider)
        _mark_uncertain(rows, f"{type(exc).__name__}: {exc}"[:300])
        return
    metrics.SEND_REQUESTS.labels(provider).inc()
    _store_results(provider, rows, results, outcome)


def _rate_wait(provider: str) -> float:
    rate = provider_settings(provider).rate_limit
    if not rate:
        return 0.0
    return RateLimiter(provider, rate).acquire(MAX_RATE_WAIT)


def _store_results(
    provider: str, rows: list[Message], results: list[SendResult], outcome: SendOutcome
) -> None:
    by_ref = {r.ref: r for r in results}
    now = utcnow()
    first_poll = first_poll_at(provider, now)
    with db.session() as s:
        for row in load_rows(s, [r.id for r in rows]):
            result = by_ref.get(row.id)
            if result is None:
                move(
                    s,
                    row,
                    Status.FAILED,
                    source="worker",
                    error=f"{provider} gave no answer for this message",
                )
                outcome.failed += 1
                continue
            outbox_id = result.raw.get("outbox_id") if isinstance(result.raw, dict) else None
            if result.accepted and outbox_id:
                held = (
                    f"in the {provider} outbox until {row.send_at} (outbox id {outbox_id}); "
                    "smsq cancel removes it"
                )
                move(
                    s,
                    row,
                    Status.SENT,
                    source="worker",
                    raw=result.raw,
                    note=held,
                    provider_message_id=str(outbox_id),
                    sent_at=now,
                    error=None,
                    next_attempt_at=None,
                    next_poll_at=None,
                )
                row.note = held
                s.add(row)
                outcome.sent += 1
            elif result.accepted:
                move(
                    s,
                    row,
                    Status.SENT,
                    source="worker",
                    raw=result.raw,
                    note=result.error,
                    provider_message_id=result.provider_message_id,
                    sent_at=now,
                    error=None,
                    next_attempt_at=None,
                    next_poll_at=first_poll if result.provider_message_id else None,
                    poll_count=0,
                )
                outcome.sent += 1
            else:
                move(
                    s,
                    row,
                    result.status
                    if result.status in (Status.REJECTED, Status.FAILED)
                    else Status.REJECTED,
                    source="worker",
                    raw=result.raw,
                    error=result.error,
                    provider_message_id=result.provider_message_id,
                    next_attempt_at=None,
                )
                outcome.rejected += 1
        s.commit()


def _retry_later(
    rows: list[Message], exc: RetryableProviderError, requeue: Requeue
) -> float | None:
    """Back to `queued` with `next_attempt_at`, or `failed` past the deadline or attempts."""
    settings = get_settings()
    now = utcnow()
    retry_ids: list[str] = []
    delay_used: float | None = None
    with db.session() as s:
        for row in load_rows(s, [r.id for r in rows]):
            deadline = row.created_at + timedelta(seconds=settings.retry_deadline_seconds)
            attempts = row.attempts - (1 if exc.throttled else 0)
            delay = backoff_delay(attempts, exc.retry_after)
            if not exc.throttled and (
                attempts >= settings.max_attempts or now + timedelta(seconds=delay) > deadline
            ):
                move(
                    s,
                    row,
                    Status.FAILED,
                    source="worker",
                    raw=exc.raw,
                    error=f"gave up after {attempts} attempt(s): {exc}",
                )
                continue
            move(
                s,
                row,
                Status.QUEUED,
                source="worker",
                raw=exc.raw,
                note=f"retry in {delay:.1f}s: {exc}",
                error=str(exc),
                attempts=attempts,
                next_attempt_at=now + timedelta(seconds=delay + settings.sweep_after_seconds)
                if delay <= MAX_COUNTDOWN
                else now + timedelta(seconds=delay),
            )
            metrics.RETRIES.labels(row.provider, "throttled" if exc.throttled else "error").inc()
            retry_ids.append(row.id)
            delay_used = delay
        s.commit()
    if retry_ids and delay_used is not None and delay_used <= MAX_COUNTDOWN:
        requeue(retry_ids, delay_used)
    return delay_used


def _hand_back(rows: list[Message], wait: float, requeue: Requeue, note: str) -> None:
    """Return claimed rows to the queue without counting an attempt (rate-limit wait)."""
    settings = get_settings()
    now = utcnow()
    with db.session() as s:
        for row in load_rows(s, [r.id for r in rows]):
            move(
                s,
                row,
                Status.QUEUED,
                source="worker",
                note=note,
                attempts=max(0, row.attempts - 1),
                next_attempt_at=now + timedelta(seconds=wait + settings.sweep_after_seconds),
            )
        s.commit()
    requeue([r.id for r in rows], min(wait, MAX_COUNTDOWN))


def _fail(rows: list[Message], error: str, raw: object = None) -> None:
    with db.session() as s:
        for row in load_rows(s, [r.id for r in rows]):
            move(s, row, Status.FAILED, source="worker", raw=raw, error=error, next_attempt_at=None)
        s.commit()


def _mark_uncertain(rows: list[Message], note: str) -> None:
    with db.session() as s:
        for row in load_rows(s, [r.id for r in rows]):
            row.note = f"uncertain send: {note}"
            s.add(row)
            record_event(
                s, row.id, source="worker", kind="attempt", provider=row.provider, note=row.note
            )
        s.commit()
