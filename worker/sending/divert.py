"""A batch whose gateway may not be called (account blocked, breaker open): each
message rerouted to its first usable fallback, or held for the cool-down, or failed
with the reason; never an attempt.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session

from producer import db
from producer.errors import InvalidMessage
from producer.limits import limits_for
from producer.models import Message, utcnow
from producer.queues import MAX_COUNTDOWN
from producer.settings import get_settings, provider_names, provider_settings
from producer.status import Status
from producer.validation import check_sender, check_text
from worker.resilience.breaker import Breaker
from worker.sending import guard
from worker.sending.decisions import (
    fallbacks_after_reroute,
    hold_plan,
    pick_fallback,
)
from worker.sending.outcome import Requeue, SendOutcome
from worker.store.transitions import fence, load_rows, move, record_event


def fallback_for(row: Message) -> tuple[str | None, list[str]]:
    """The first of the row's fallbacks that may take it now, and why others may not
    (`decisions.pick_fallback`; this reads their state)."""
    return pick_fallback(
        row.provider, row.fallbacks, row.maybe_sent_at is not None, lambda name: _why_not(row, name)
    )


def _why_not(row: Message, name: str) -> str | None:
    """Why gateway `name` cannot take `row` now: not configured, the message does not
    fit its limits (text, parts, sender, flash), its account blocked, its breaker open."""
    if name not in provider_names() or not provider_settings(name).configured:
        return f"{name} is not configured"
    misfit = _misfit(row, name)
    if misfit:
        return f"{name} cannot take it ({misfit})"
    block = guard.account_block(name)
    if block:
        return f"{name} account blocked: {block}"
    if Breaker(name).is_open():
        return f"{name} circuit breaker open"
    return None


def _misfit(row: Message, provider: str) -> str | None:
    """Why `provider` cannot carry this message as stored, or None when it can."""
    try:
        check_text(row.text, provider)
        check_sender(row.sender, provider)
    except InvalidMessage as exc:
        return str(exc)
    if row.flash and not limits_for(provider).supports_flash:
        return "flash: not supported"
    return None


def _divert(
    provider: str,
    rows: list[Message],
    reason: str,
    wait: float | None,
    requeue: Requeue,
    outcome: SendOutcome,
) -> None:
    """`provider` must not be called: reroute each row to a fallback, or let it wait
    for the cool-down (`wait` seconds) or, when `wait` is None (guard), fail it.

    The claim counted an attempt; none was made, so it is given back.
    """
    now = utcnow()
    rerouted: list[str] = []
    waiting: list[str] = []
    with db.session() as s:
        fence(s, rows)  # only rows still under this claim (see `transitions.fence`)
        for row in load_rows(s, [r.id for r in rows]):
            if row.status != Status.SENDING.value:
                continue
            target, skipped = fallback_for(row)
            if target is not None:
                if _reroute(s, row, provider, target, reason):
                    rerouted.append(row.id)
                    outcome.rerouted += 1
            elif _hold(s, row, reason, skipped, wait, now):
                waiting.append(row.id)
                outcome.waiting += 1
            elif row.status == Status.FAILED.value:
                outcome.failed += 1
        s.commit()
    if rerouted:
        requeue(rerouted, 0.0)
    if waiting and wait is not None and wait <= MAX_COUNTDOWN:
        requeue(waiting, wait)
        outcome.retry_in = wait


def _reroute(s: Session, row: Message, origin: str, target: str, reason: str) -> bool:
    note = f"rerouted from {origin} to {target}: {reason}"
    moved = move(
        s,
        row,
        Status.QUEUED,
        source="worker",
        note=note,
        provider=target,
        fallbacks=fallbacks_after_reroute(row.fallbacks, target, origin),
        attempts=max(0, row.attempts - 1),
        next_attempt_at=utcnow() + timedelta(seconds=get_settings().sweep_after_seconds),
    )
    if moved:
        record_event(s, row.id, source="worker", kind="reroute", provider=target, note=note)
        row.note = note
        s.add(row)
    return moved


def _hold(
    s: Session, row: Message, reason: str, skipped: list[str], wait: float | None, now: datetime
) -> bool:
    """Wait (True) or fail the row, as `decisions.hold_plan` says; never an attempt."""
    settings = get_settings()
    plan = hold_plan(
        reason=reason,
        skipped=skipped,
        wait=wait,
        created_at=row.created_at,
        now=now,
        deadline_seconds=settings.retry_deadline_seconds,
        sweep_after_seconds=settings.sweep_after_seconds,
    )
    attempts = max(0, row.attempts - 1)
    if plan.fail is not None:
        move(
            s,
            row,
            Status.FAILED,
            source="worker",
            error=plan.fail,
            attempts=attempts,
            next_attempt_at=None,
        )
        return False
    why = f"; fallbacks: {', '.join(skipped)}" if skipped else "; no fallback"
    return move(
        s,
        row,
        Status.QUEUED,
        source="worker",
        note=f"waiting {wait:.1f}s: {reason}{why} (not an attempt)",
        attempts=attempts,
        next_attempt_at=plan.next_attempt_at,
    )
