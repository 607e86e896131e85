"""Settle uncertain sends: the worker may or may not have reached the gateway.

A row left in `sending` (the worker died between the claim and storing the
answer, or an unexpected error came after the request) is settled by
SMSQ_UNCERTAIN_SEND:
- `reconcile` (default) asks the gateway (`ProviderAdapter.find_sent`): found ->
  `sent` with the gateway id, polls scheduled; confirmed not found -> `queued`
  again (a resend is safe); cannot tell, on a gateway that refuses copies for
  a while (SMSClub, 2 minutes) and still within that window -> `queued` again
  (a copy it has comes back refused, one it never got is sent); cannot tell
  otherwise -> `sent` without an id and a note "uncertain: not resent" (never a
  silent second SMS);
- `resend` queues it again (at-least-once);
- `fail` marks it `failed` (at-most-once).
A resend never goes past SMSQ_MAX_ATTEMPTS. Every lookup and every choice is
an event on the message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, select

from producer import db
from producer.api import gateway_schedules
from producer.models import Message, utcnow
from producer.settings import get_settings
from producer.status import Status
from worker.gateways.base import LookupResult, ProviderError, RetryableProviderError
from worker.gateways.registry import get_adapter
from worker.sending import copy_window
from worker.store.transitions import fence, load_rows, move, record_event
from worker.tracking.dlr import adopt_early_reports
from worker.tracking.polling import first_poll_at

log = logging.getLogger("smsq.reconcile")

# The lookup window starts this long before the claim (clocks of the store and gateway).
LOOKUP_SLACK = timedelta(seconds=60)
# A lookup that failed (gateway down) is tried again this much later, until the deadline.
LOOKUP_RETRY_SECONDS = 60.0
# Gateway lookups per run (each one is an HTTP request); the rest wait for the next tick.
MAX_LOOKUPS = 20
# A resend within a gateway's copy window is only queued with this long of it left
# (the queue, a rate-limit wait); the send path checks the window again anyway.
WINDOW_RESEND_SLACK = timedelta(seconds=20)


@dataclass
class Settled:
    found: int = 0
    requeued: int = 0
    failed: int = 0
    left_sent: int = 0
    later: int = 0  # the lookup failed for now; asked again after LOOKUP_RETRY_SECONDS

    @property
    def total(self) -> int:
        return self.found + self.requeued + self.failed + self.left_sent


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def lookup(row: Message) -> LookupResult:
    """Ask the row's gateway whether it has the message; errors become an answer too."""
    if row.send_at is not None and gateway_schedules(row.provider):
        return LookupResult(
            "unknown", detail=f"it may be waiting in the {row.provider} outbox, which has no lookup"
        )
    since = _aware(row.claimed_at or row.updated_at or row.created_at) - LOOKUP_SLACK
    try:
        return get_adapter(row.provider).find_sent(row.id, row.to, row.text, since)
    except RetryableProviderError as exc:
        return LookupResult("unknown", detail=f"lookup failed: {exc}", raw={"retryable": True})
    except ProviderError as exc:
        return LookupResult("unknown", detail=f"lookup failed: {exc}")


def settle(ids: Sequence[str], *, source: str, cause: str) -> Settled:
    """Settle the rows `ids` still in `sending` under SMSQ_UNCERTAIN_SEND."""
    settings = get_settings()
    policy = settings.uncertain_send
    with db.session() as s:
        rows = [r for r in load_rows(s, list(ids)) if r.status == Status.SENDING.value]
    if policy == "reconcile":
        rows = rows[:MAX_LOOKUPS]
    answers: dict[str, LookupResult] = {}
    if policy == "reconcile":
        for row in rows:  # HTTP outside any transaction
            answers[row.id] = lookup(row)
    done = Settled()
    now = utcnow()
    tokens = {r.id: r.claim_token for r in rows}
    with db.session() as s:
        fence(s, rows)  # the claims judged lost, not one taken since (`transitions.fence`)
        for row in _lock_rows(s, [r.id for r in rows]):
            if row.status != Status.SENDING.value or row.claim_token != tokens[row.id]:
                continue  # settled meanwhile (a late answer, another beat), or claimed again
            answer = answers.get(row.id)
            if answer is not None:
                record_event(
                    s,
                    row.id,
                    source=source,
                    kind="reconcile",
                    provider=row.provider,
                    provider_message_id=answer.provider_message_id,
                    note=f"uncertain send ({cause}): {row.provider} lookup: "
                    f"{answer.state.replace('_', ' ')}: {answer.detail}",
                    raw=answer.raw,
                )
            _apply(s, row, policy, answer, cause, source, now, done)
        s.commit()
    if done.total or done.later:
        log.info("uncertain sends settled (%s): %s", policy, done)
    return done


def _lock_rows(s: Session, ids: list[str]) -> list[Message]:
    """The rows of `ids`, locked for this transaction on PostgreSQL; rows another
    transaction holds are skipped, for a later tick: a writer cut off mid-way (a
    partitioned host) may hold them in a transaction left open, and the tick's
    thread must not wait behind it."""
    return list(
        s.exec(
            select(Message).where(Message.id.in_(ids)).with_for_update(skip_locked=True)  # type: ignore[union-attr]
        )
    )


@dataclass(frozen=True)
class Settlement:
    """What becomes of one uncertain send (`decide`): its outcome and the words the
    row keeps (an error for `fail`, a note otherwise)."""

    outcome: str  # a field of `Settled`: failed | requeued | found | later | left_sent
    text: str = ""
    keep_maybe_sent_at: bool = False  # a resend counted on the copy window


def decide(
    *,
    policy: str,
    answer: LookupResult | None,
    cause: str,
    provider: str,
    attempts: int,
    max_attempts: int,
    copy_refused_until: datetime | None,
    now: datetime,
    deadline: datetime,
) -> Settlement:
    """SMSQ_UNCERTAIN_SEND applied to what the gateway said (a pure function): fail;
    resend when asked to or the gateway confirmed it never had it; adopt a found
    send; resend while the gateway still refuses a copy; ask again later after a
    failed lookup; otherwise leave it `sent`, never resent blindly."""
    if policy == "fail":
        return Settlement(
            "failed",
            f"uncertain send ({cause}): the gateway may or may not have it; "
            "failed by SMSQ_UNCERTAIN_SEND=fail",
        )
    if policy == "resend" or (answer is not None and answer.state == "not_found"):
        why = (
            f"{answer.detail}; it never reached the gateway, so a resend is safe"
            if answer is not None
            else "queued again by SMSQ_UNCERTAIN_SEND=resend (the gateway may already have it)"
        )
        if attempts >= max_attempts:
            return Settlement(
                "failed", f"uncertain send ({cause}): {why}, but {attempts} attempt(s) are used up"
            )
        return Settlement("requeued", f"uncertain send ({cause}): {why}")
    assert answer is not None
    if answer.state == "found":
        return Settlement("found", f"uncertain send reconciled: {answer.detail}")
    until = copy_refused_until
    if until is not None and until - now >= WINDOW_RESEND_SLACK and attempts < max_attempts:
        return Settlement(
            "requeued",
            f"uncertain send ({cause}): resent while {provider} still refuses a "
            f"copy (until {until:%H:%M:%S} UTC): a copy it has comes back refused",
            keep_maybe_sent_at=True,
        )
    if isinstance(answer.raw, dict) and answer.raw.get("retryable") and now < deadline:
        return Settlement("later")
    return Settlement(
        "left_sent",
        f"uncertain: not resent ({cause}; {answer.detail}); the gateway may have it "
        "(SMSQ_UNCERTAIN_SEND=reconcile)",
    )


def _apply(
    s,  # type: ignore[no-untyped-def]
    row: Message,
    policy: str,
    answer: LookupResult | None,
    cause: str,
    source: str,
    now: datetime,
    done: Settled,
) -> None:
    """Gather the facts `decide` needs, then write what it decided."""
    settings = get_settings()
    first = _aware(row.maybe_sent_at or row.claimed_at or row.updated_at)
    until = None
    if policy == "reconcile" and answer is not None and answer.state not in ("found", "not_found"):
        until = copy_window.refused_until(get_adapter(row.provider), row.provider, first)
    verdict = decide(
        policy=policy,
        answer=answer,
        cause=cause,
        provider=row.provider,
        attempts=row.attempts,
        max_attempts=settings.max_attempts,
        copy_refused_until=until,
        now=now,
        deadline=_aware(row.created_at) + timedelta(seconds=settings.retry_deadline_seconds),
    )
    _write(s, row, verdict, answer, source, now, first)
    setattr(done, verdict.outcome, getattr(done, verdict.outcome) + 1)


def _write(s, row: Message, verdict: Settlement, answer, source: str, now: datetime, first):  # type: ignore[no-untyped-def]
    """Apply a settlement to the row, through the state machine."""
    if verdict.outcome == "failed":
        _finish(s, row, Status.FAILED, source, error=verdict.text)
    elif verdict.outcome == "requeued":
        extra = {"maybe_sent_at": first} if verdict.keep_maybe_sent_at else {}
        _finish(s, row, Status.QUEUED, source, note=verdict.text, next_attempt_at=now, **extra)
    elif verdict.outcome == "found":
        _finish(
            s,
            row,
            Status.SENT,
            source,
            note=verdict.text,
            provider_message_id=answer.provider_message_id,
            sent_at=now,
            error=None,
            next_attempt_at=None,
            next_poll_at=first_poll_at(row.provider, now) if answer.provider_message_id else None,
            poll_count=0,
        )
        adopt_early_reports(s, row)  # a push may have come before we knew the id
    elif verdict.outcome == "later":
        row.updated_at = now  # the sweep asks again after LOOKUP_RETRY_SECONDS
        s.add(row)
    else:
        _finish(
            s, row, Status.SENT, source, note=verdict.text, next_attempt_at=None, next_poll_at=None
        )


def _finish(s, row: Message, status: Status, source: str, note: str | None = None, **fields):  # type: ignore[no-untyped-def]
    """Move the row; keep the note on the row too, where `get_status` shows it."""
    if move(s, row, status, source=source, note=note or fields.get("error"), **fields) and note:
        row.note = note
        s.add(row)
