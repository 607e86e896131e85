"""Writing what a send attempt came to: the gateway's answer, a retry, a failure,
an uncertain send, a rate-limit hand-back; each an `attempt` event as well.

The decisions are `worker.sending.decisions`'; these functions apply them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlmodel import Session

from producer import db
from producer.models import Message, utcnow
from producer.queues import MAX_COUNTDOWN
from producer.settings import get_settings
from producer.status import Status
from producer.traffic import expiry_error
from worker.gateways.base import (
    RetryableProviderError,
    SendResult,
)
from worker.ops import metrics
from worker.resilience import backoff, liveness, reconcile
from worker.sending.decisions import (
    Retry,
    counted_attempts,
    retry_plan,
)
from worker.sending.outcome import Requeue, SendOutcome
from worker.store.transitions import (
    Move,
    fence,
    load_rows,
    move,
    move_many,
    record_event,
    stale_write,
    update_held,
)
from worker.tracking.dlr import adopt_early_reports_of
from worker.tracking.polling import first_poll_at

log = logging.getLogger("smsq.sending")


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with equal jitter, capped; `Retry-After` wins when given."""
    settings = get_settings()
    return backoff.delay(
        attempt,
        base=settings.retry_base_seconds,
        cap=settings.retry_cap_seconds,
        retry_after=retry_after,
    )


def _store_results(
    provider: str,
    rows: list[Message],
    results: list[SendResult],
    outcome: SendOutcome,
    *,
    fresh: bool = False,
) -> None:
    """The gateway's answer, per message: accepted (the usual case, one UPDATE for the
    batch), held in its outbox, refused, or missing from the answer.

    `fresh`: `rows` are as the claim returned them, untouched since: they are used as
    they are instead of read again (every UPDATE is still conditional on the status).
    A try after a failed one reads them again: the failed try changed them in memory."""
    by_ref = {r.ref: r for r in results}
    now = utcnow()
    accepted: list[Move] = []
    with db.session() as s:
        fence(s, rows)  # only rows still under this claim (see `transitions.fence`)
        if fresh:
            s.add_all(rows)  # no statement: they join this session as they are
        for row in rows if fresh else load_rows(s, [r.id for r in rows]):
            result = by_ref.get(row.id)
            _attempt_event(s, row, _attempt_outcome(provider, result))
            if result is None:
                error = f"{provider} gave no answer for this message"
                move(s, row, Status.FAILED, source="worker", error=error)
                outcome.failed += 1
            elif result.accepted and _outbox_id(result):
                _held_in_outbox(s, row, provider, result, now)
                outcome.sent += 1
            elif result.accepted:
                accepted.append(_accepted_move(row, result, now, first_poll_at(provider, now)))
            else:
                _refused(s, row, result)
                outcome.rejected += 1
        outcome.sent += move_many(s, Status.SENT, accepted, source="worker")
        adopt_early_reports_of(s, [m.row for m in accepted if m.row.status == Status.SENT.value])
        s.commit()


def _outbox_id(result: SendResult) -> str | None:
    raw = result.raw.get("outbox_id") if isinstance(result.raw, dict) else None
    return str(raw) if raw else None


def _accepted_move(row: Message, result: SendResult, now: datetime, first_poll) -> Move:  # type: ignore[no-untyped-def]
    return Move(
        row,
        {
            "provider_message_id": result.provider_message_id,
            "sent_at": now,
            "error": None,
            "next_attempt_at": None,
            "next_poll_at": first_poll if result.provider_message_id else None,
            "poll_count": 0,
        },
        raw=result.raw,
        note=result.error,
    )


def _held_in_outbox(
    s: Session, row: Message, provider: str, result: SendResult, now: datetime
) -> None:
    """Scheduled at the gateway (its outbox): `sent`, with the outbox id to cancel by."""
    outbox_id = _outbox_id(result)
    held = (
        f"in the {provider} outbox until {row.send_at} (outbox id {outbox_id}); "
        "smsq cancel removes it"
    )
    moved = move(
        s,
        row,
        Status.SENT,
        source="worker",
        raw=result.raw,
        note=held,
        provider_message_id=outbox_id,
        sent_at=now,
        error=None,
        next_attempt_at=None,
        next_poll_at=None,
    )
    if moved:
        row.note = held
        s.add(row)


def _refused(s: Session, row: Message, result: SendResult) -> None:
    status = result.status if result.status in (Status.REJECTED, Status.FAILED) else Status.REJECTED
    move(
        s,
        row,
        status,
        source="worker",
        raw=result.raw,
        error=result.error,
        provider_message_id=result.provider_message_id,
        next_attempt_at=None,
    )


def _retry_later(
    rows: list[Message],
    exc: RetryableProviderError,
    requeue: Requeue,
    maybe_sent_at: datetime | None = None,
) -> float | None:
    """Back to `queued` with `next_attempt_at`, or `failed` past the deadline or attempts
    (`decisions.retry_plan`). `maybe_sent_at`: the request may have reached the gateway
    (its answer was lost); kept on each row unless an earlier lost answer is there."""
    now = utcnow()
    retry_ids: list[str] = []
    delay_used: float | None = None
    with db.session() as s:
        fence(s, rows)
        for row in load_rows(s, [r.id for r in rows]):
            plan = _plan_retry(row, exc, now)
            _attempt_event(s, row, _retry_note(exc, plan.delay), counted=not exc.throttled)
            first_lost = row.maybe_sent_at or maybe_sent_at
            if plan.give_up:
                lost = "; an earlier answer was lost: the gateway may have it" if first_lost else ""
                move(
                    s,
                    row,
                    Status.FAILED,
                    source="worker",
                    raw=exc.raw,
                    error=f"gave up after {plan.attempts} attempt(s): {exc}{lost}",
                    maybe_sent_at=first_lost,
                )
                continue
            if move(
                s,
                row,
                Status.QUEUED,
                source="worker",
                raw=exc.raw,
                note=f"retry in {plan.delay:.1f}s: {exc}",
                error=str(exc),
                attempts=plan.attempts,
                maybe_sent_at=first_lost,
                next_attempt_at=plan.next_attempt_at,
            ):
                retry_ids.append(row.id)
                delay_used = plan.delay
        s.commit()
    if retry_ids:  # a batch is one provider's
        kind = "throttled" if exc.throttled else "error"
        metrics.RETRIES.labels(rows[0].provider, kind).inc(len(retry_ids))
    if retry_ids and delay_used is not None and delay_used <= MAX_COUNTDOWN:
        requeue(retry_ids, delay_used)
    return delay_used


def _plan_retry(row: Message, exc: RetryableProviderError, now: datetime) -> Retry:
    settings = get_settings()
    attempts = counted_attempts(row.attempts, exc.throttled)
    return retry_plan(
        attempts=attempts,
        throttled=exc.throttled,
        delay=backoff_delay(attempts, exc.retry_after),
        created_at=row.created_at,
        now=now,
        max_attempts=settings.max_attempts,
        deadline_seconds=settings.retry_deadline_seconds,
        sweep_after_seconds=settings.sweep_after_seconds,
    )


def _retry_note(exc: RetryableProviderError, delay: float) -> str:
    if exc.throttled:
        return f"rate-limited by the gateway ({exc}): handed back for {delay:.1f}s, not counted"
    return f"retryable error: {exc}"


def _hand_back(rows: list[Message], wait: float, requeue: Requeue, note: str) -> None:
    """Return claimed rows to the queue without counting an attempt (rate-limit wait)."""
    settings = get_settings()
    now = utcnow()
    back: list[str] = []
    with db.session() as s:
        fence(s, rows)
        for row in load_rows(s, [r.id for r in rows]):
            _attempt_event(s, row, f"rate-limited: {note}; handed back, not counted", counted=False)
            if move(
                s,
                row,
                Status.QUEUED,
                source="worker",
                note=note,
                attempts=max(0, row.attempts - 1),
                next_attempt_at=now + timedelta(seconds=wait + settings.sweep_after_seconds),
            ):
                back.append(row.id)
        s.commit()
    if back:
        requeue(back, min(wait, MAX_COUNTDOWN))


def _expire(rows: list[Message], outcome: SendOutcome) -> None:
    """Claimed rows past their validity: `expired`, never sent; the claim's attempt is
    given back (no request was made). The app's callback fires through `move`."""
    with db.session() as s:
        fence(s, rows)
        for row in load_rows(s, [r.id for r in rows]):
            error = expiry_error(row.ttl, row.expires_at, row.maybe_sent_at is not None)
            moved = move(
                s,
                row,
                Status.EXPIRED,
                source="worker",
                note="validity (ttl) ran out before the request",
                only_from=frozenset({Status.SENDING}),
                error=error,
                attempts=max(0, row.attempts - 1),
                next_attempt_at=None,
            )
            outcome.expired += int(moved)
        s.commit()


def _fail(rows: list[Message], error: str, raw: object = None) -> None:
    """A permanent error for the whole request: failed, never retried."""
    with db.session() as s:
        fence(s, rows)
        for row in load_rows(s, [r.id for r in rows]):
            _attempt_event(s, row, f"permanent error: {error}")
            move(s, row, Status.FAILED, source="worker", raw=raw, error=error, next_attempt_at=None)
        s.commit()


def _mark_uncertain(rows: list[Message], note: str) -> None:
    """The request went out but its answer was lost to a surprise: settle by policy.

    `resend` and `fail` apply at once. `reconcile` leaves the rows in `sending`
    with the claim released: beat asks the gateway once the claim is
    `liveness.DEAD_AFTER` old, when its reports have caught up, rather than read
    a "not found" that only means "not yet".
    """
    policy = get_settings().uncertain_send
    text = f"uncertain send: {note}" + (
        "; the sweep will ask the gateway whether it has it" if policy == "reconcile" else ""
    )
    with db.session() as s:
        released = update_held(s, rows, claimed_by=liveness.RELEASED, note=text)
        for row in load_rows(s, [r.id for r in rows]):
            _attempt_event(s, row, f"uncertain: {note}")
            if row.id not in released:
                stale_write(s, row, None, "worker")
        s.commit()
    if policy != "reconcile" and released:
        reconcile.settle(sorted(released), source="worker", cause=note)


def _attempt_outcome(provider: str, result: SendResult | None) -> str:
    if result is None:
        return f"no answer: {provider} gave no answer for this message"
    if result.accepted:
        return f"accepted (gateway id {result.provider_message_id or 'not given'})"
    return f"permanent error: {result.error or result.status}"


def _attempt_event(s: Session, row: Message, outcome: str, *, counted: bool = True) -> None:
    """One `attempt` event per message per gateway call (or rate-limit hand-back)."""
    number = f"attempt {row.attempts}" if counted else "not an attempt"
    record_event(
        s,
        row.id,
        source="worker",
        kind="attempt",
        provider=row.provider,
        provider_message_id=row.provider_message_id,
        note=f"{number} via {row.provider}: {outcome}",
    )


def _breaker_event(rows: list[Message], note: str) -> None:
    """Record a breaker state change on the messages whose send caused it (a note
    only: with the store down it is logged and dropped, never blocking the send)."""
    try:
        with db.session() as s:
            for row in rows:
                record_event(
                    s, row.id, source="worker", kind="breaker", provider=row.provider, note=note
                )
            s.commit()
    except Exception as exc:
        if not db.store_unavailable(exc):
            raise
        log.warning("store unavailable: breaker event not recorded: %s", note)
