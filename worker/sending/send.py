"""Send queued messages: claim, respect the global rate, call the gateway, store the answer.

The order is what makes a send exactly-once:
1. claim each row with a conditional UPDATE `queued -> sending` (a redelivered
   task finds nothing to claim and does nothing);
2. take a slot from the provider's global rate limiter (a long wait hands the
   rows back to the queue, without counting an attempt);
3. one HTTP request per gateway batch;
4. store the answer (sent with the gateway id, rejected, retry later, failed)
   before the task returns and is acked; every attempt is an `attempt` event.
Before any of that, a batch whose provider's account is blocked (`worker.sending.guard`)
or whose circuit breaker is open (`worker.resilience.breaker`) does not reach the gateway:
each message takes its first usable fallback (`fallbacks`, from SMSQ_ROUTES) or,
without one, waits for the cool-down (breaker) or fails with the reason (guard),
never burning an attempt.
An unexpected error after the request is an uncertain send, settled under
SMSQ_UNCERTAIN_SEND (`worker.resilience.reconcile`), never resent silently.
The store being down does not make a send uncertain: the claim is tried again
(then the task is queued again), and the writes around the request are tried
again for up to `store_retry.STORE_RETRY_SECONDS` (`worker.store.retry`). If a
batch still breaks off before its request, its rows go back to `queued`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import redis
from sqlalchemy import update
from sqlmodel import Session, select

from producer import db
from producer.api import gateway_schedules
from producer.errors import InvalidMessage
from producer.limits import limits_for
from producer.models import Message, utcnow
from producer.queues import MAX_COUNTDOWN
from producer.settings import get_settings, provider_names, provider_settings
from producer.status import Status
from producer.validation import check_sender, check_text
from worker.gateways.base import (
    OutgoingMessage,
    PermanentProviderError,
    ProviderAdapter,
    RetryableProviderError,
    SendResult,
)
from worker.gateways.registry import get_adapter
from worker.ops import metrics
from worker.resilience import backoff, liveness, reconcile
from worker.resilience.breaker import Breaker
from worker.resilience.ratelimit import limiter_for
from worker.sending import copy_window, guard
from worker.store import retry as store_retry
from worker.store.transitions import Move, claim_many, load_rows, move, move_many, record_event
from worker.tracking.callback_urls import dlr_url_for
from worker.tracking.dlr import adopt_early_reports
from worker.tracking.polling import first_poll_at

log = logging.getLogger("smsq.sending")

# Waits for a rate-limit slot up to this long happen in the task; longer ones re-queue.
MAX_RATE_WAIT = 1.0

# requeue(ids, countdown[, claim_token]): queue a later send task for `ids`.
Requeue = Callable[..., None]
# The claim is tried again for this long while the store is down; then the task is
# queued again after CLAIM_REQUEUE_SECONDS (the rows stay `queued`, nothing is lost).
CLAIM_RETRY_SECONDS = 30.0
CLAIM_REQUEUE_SECONDS = 10.0


@dataclass
class SendOutcome:
    claimed: int = 0
    sent: int = 0
    rejected: int = 0
    failed: int = 0
    rerouted: int = 0
    waiting: int = 0
    retry_in: float | None = None

    def add(self, other: SendOutcome) -> None:
        """Fold in the counts of one store write that landed (a retried write counts once)."""
        for name in ("claimed", "sent", "rejected", "failed", "rerouted", "waiting"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.retry_in is not None:
            self.retry_in = other.retry_in


@dataclass
class _Stage:
    """How far a batch got: whether its gateway request was made (then a batch that
    breaks off is an uncertain send; before it, the rows can simply go back)."""

    requested: bool = False


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with equal jitter, capped; `Retry-After` wins when given."""
    settings = get_settings()
    return backoff.delay(
        attempt,
        base=settings.retry_base_seconds,
        cap=settings.retry_cap_seconds,
        retry_after=retry_after,
    )


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


def send_messages(
    ids: Sequence[str], requeue: Requeue, claim_token: str | None = None
) -> SendOutcome:
    """Send the messages `ids` (one provider); `requeue(ids, countdown)` queues a later try.

    `claim_token`: the claim of an earlier task whose claim may have committed unheard
    (the store failed at that moment); its rows are taken up again under it.
    """
    outcome = SendOutcome()
    token = claim_token or uuid.uuid4().hex
    tries = [0]

    def claim() -> list[Message]:
        tries[0] += 1
        # A try after the first, or a task queued again by a claim that gave up, may
        # find its own rows already `sending`: the earlier commit landed unheard.
        retake = claim_token is not None or tries[0] > 1
        return _claim(list(dict.fromkeys(ids)), token, retake)

    try:
        rows = store_retry.durably("claiming messages", claim, CLAIM_RETRY_SECONDS)
    except Exception as exc:
        if not db.store_unavailable(exc):
            raise
        log.warning(
            "store unavailable: %d message(s) not claimed, queued again in %.0fs",
            len(ids),
            CLAIM_REQUEUE_SECONDS,
        )
        requeue(list(ids), CLAIM_REQUEUE_SECONDS, token)
        outcome.retry_in = CLAIM_REQUEUE_SECONDS
        return outcome
    if not rows:
        return outcome
    outcome.claimed = len(rows)
    by_provider: dict[str, list[Message]] = {}
    for row in rows:
        by_provider.setdefault(row.provider, []).append(row)
    batches = [
        (provider, group[start : start + limits_for(provider).max_batch])
        for provider, group in by_provider.items()
        for start in range(0, len(group), limits_for(provider).max_batch)
    ]
    for index, (provider, batch) in enumerate(batches):
        stage = _Stage()
        try:
            _send_batch(provider, batch, requeue, outcome, stage)
        except BaseException as exc:
            if not stage.requested and _transient(exc):
                _unclaim(batch)
            else:
                _release_claims(batch)
            untried = [row for _provider, later in batches[index + 1 :] for row in later]
            if untried:  # claimed, never tried: back to the queue, not left `sending`
                _unclaim(untried)
            raise
    return outcome


def _transient(exc: BaseException) -> bool:
    """The store or Redis was unavailable: the same batch may go through later."""
    return db.store_unavailable(exc) or isinstance(exc, redis.RedisError | ConnectionError)


def _claim(ids: list[str], token: str, retake: bool) -> list[Message]:
    """`queued -> sending` under `token` for those of `ids` no other claim has; the
    claimed rows, read before the commit, so that whatever fails after it, the rows
    are known, and a retry (`retake`) finds the ones it already holds."""
    with db.session() as s:
        claimed = claim_many(s, ids, utcnow(), token, retake=retake)
        rows = (
            list(s.exec(select(Message).where(Message.id.in_(claimed))))  # type: ignore[union-attr]
            if claimed
            else []
        )
        s.commit()
        return rows


def _unclaim(rows: list[Message]) -> None:
    """A batch broke off before its gateway request (a store or Redis error): nothing
    went out, so the rows go back to `queued` (the claim's attempt given back) for the
    sweep to queue again, instead of being settled as uncertain sends."""
    now = utcnow()
    retry_at = now + timedelta(seconds=get_settings().sweep_after_seconds)
    tokens = {r.id: r.claim_token for r in rows}

    def write() -> None:
        with db.session() as s:
            for row in load_rows(s, [r.id for r in rows]):
                if row.status != Status.SENDING.value or row.claim_token != tokens.get(row.id):
                    continue  # no longer this claim's
                move(
                    s,
                    row,
                    Status.QUEUED,
                    source="worker",
                    note="claim given back: the batch broke off before its request",
                    attempts=max(0, row.attempts - 1),
                    next_attempt_at=retry_at,
                )
            s.commit()

    try:
        store_retry.durably("giving back claims", write)
    except Exception:
        log.warning("could not give back %d claim(s)", len(rows), exc_info=True)


def _durably(what: str, write: Callable[[SendOutcome], object], outcome: SendOutcome) -> None:
    """`write(counts)` through `store_retry.durably`; the counts of the try that landed
    are added to `outcome`."""

    def once() -> SendOutcome:
        counts = SendOutcome()
        write(counts)
        return counts

    outcome.add(store_retry.durably(what, once))


def _release_claims(rows: list[Message]) -> None:
    """A batch broke off (store or broker error, a bug, a time limit) with rows still
    `sending`: whether the request went out is unknown, so give the claims up as
    uncertain sends, settled by beat soon rather than after SMSQ_STUCK_SENDING_SECONDS.
    Best effort: if the store is down too, the stuck-row bound still applies."""
    try:
        with db.session() as s:
            s.execute(
                update(Message)
                .where(
                    Message.id.in_([r.id for r in rows]),  # type: ignore[union-attr]
                    Message.status == Status.SENDING.value,
                    Message.claimed_by == liveness.process_id(),
                    Message.claim_token == rows[0].claim_token,  # one claim per task
                )
                .values(claimed_by=liveness.RELEASED)
            )
            s.commit()
    except Exception:
        log.warning("could not release %d claim(s)", len(rows), exc_info=True)


def _send_batch(
    provider: str, rows: list[Message], requeue: Requeue, outcome: SendOutcome, stage: _Stage
) -> None:
    """One gateway request for `rows`, unless the guard or the breaker keeps it from going.
    Every store write after the request goes through `_durably`: the answer is only
    in memory until it is committed."""
    adapter = get_adapter(provider)
    late = _past_duplicate_window(adapter, rows)
    if late:
        window = adapter.duplicate_window_seconds or 0
        note = f"not resent: an earlier request's answer was lost and {provider} " + (
            f"would no longer refuse a copy ({window:g} s window)" if window else "may have it"
        )
        store_retry.durably("marking uncertain", partial(_mark_uncertain, late, note))
        rows = [r for r in rows if r not in late]
        if not rows:
            return
    block = guard.account_block(provider)
    if block:
        reason = f"{provider} account blocked: {block}"
        _durably("diverting", lambda c: _divert(provider, rows, reason, None, requeue, c), outcome)
        return
    breaker = Breaker(provider)
    decision = breaker.allow()
    if not decision.allowed:
        # A row whose answer was lost goes now: the gateway refuses a copy only for a
        # while (`_past_duplicate_window`), so after the cool-down a resend could be
        # a second copy. Such rows are few; the rest wait.
        urgent = [r for r in rows if r.maybe_sent_at is not None]
        held = [r for r in rows if r.maybe_sent_at is None]
        if held:
            reason = f"{provider} circuit breaker open"
            _durably(
                "diverting",
                lambda c: _divert(provider, held, reason, decision.wait, requeue, c),
                outcome,
            )
        if not urgent:
            return
        rows = urgent
    wait = _rate_wait(provider)
    if wait > 0:
        if decision.trial:
            breaker.release_trial()
        note = f"rate limit: next slot in {wait:.2f}s"
        store_retry.durably("handing back", lambda: _hand_back(rows, wait, requeue, note=note))
        outcome.retry_in = wait
        return
    outgoing = [_outgoing(r) for r in rows]
    requested_at = utcnow()
    stage.requested = True
    try:
        results = adapter.send(outgoing)
    except RetryableProviderError as exc:
        metrics.SEND_ERRORS.labels(provider, "retryable").inc()
        if exc.maybe_sent and not _resend_is_safe(adapter, rows):
            # The gateway may have the messages: not a plain retry (SMSQ_UNCERTAIN_SEND).
            if breaker.record_failure() is not None:
                _breaker_event(rows, f"circuit breaker of {provider} opened: answers lost")
            store_retry.durably(
                "marking uncertain", partial(_mark_uncertain, rows, f"answer lost: {exc}")
            )
            return
        opened = None
        if exc.throttled:  # back-pressure, not a failure: the trial goes back unused
            if decision.trial:
                breaker.release_trial()
        else:
            opened = breaker.record_failure()
        outcome.retry_in = store_retry.durably(
            "storing a retry",
            partial(_retry_later, rows, exc, requeue, requested_at if exc.maybe_sent else None),
        )
        if opened is not None:
            _breaker_event(
                rows,
                f"circuit breaker of {provider} opened after "
                + (
                    "the half-open trial failed"
                    if decision.trial
                    else f"{breaker.failures} retryable failures in a row"
                )
                + f": no calls to {provider} for {breaker.cooldown:g}s",
            )
        return
    except PermanentProviderError as exc:
        metrics.SEND_ERRORS.labels(provider, "permanent").inc()
        closed = breaker.record_success()  # the gateway answered: it is up
        store_retry.durably("storing a failure", partial(_fail, rows, str(exc), raw=exc.raw))
        outcome.failed += len(rows)
        if closed:
            _breaker_event(rows, f"circuit breaker of {provider} closed: the gateway answered")
        return
    except Exception as exc:  # a bug or a surprise after the request: uncertain
        if decision.trial:
            breaker.release_trial()
        log.exception("unexpected error sending %d message(s) via %s", len(rows), provider)
        note = f"{type(exc).__name__}: {exc}"[:300]
        store_retry.durably("marking uncertain", lambda: _mark_uncertain(rows, note))
        return
    metrics.SEND_REQUESTS.labels(provider).inc()
    closed = breaker.record_success()
    _durably(
        "storing the gateway's answer",
        lambda c: _store_results(provider, rows, results, c),
        outcome,
    )
    if closed:
        _breaker_event(rows, f"circuit breaker of {provider} closed: the trial batch went through")


def _past_duplicate_window(adapter: ProviderAdapter, rows: list[Message]) -> list[Message]:
    """Rows an earlier request may already have delivered to the gateway (`maybe_sent_at`)
    whose resend would no longer be refused as a copy (`worker.sending.copy_window`): sending
    them again could send them twice, so they are settled as uncertain sends instead.
    Whatever delayed them (more faults, the breaker, a backlog in the queue), the
    window counts from the first lost answer. None under SMSQ_UNCERTAIN_SEND=resend
    (copies accepted)."""
    if get_settings().uncertain_send == "resend":
        return []
    now = utcnow()
    late: list[Message] = []
    for row in rows:
        if row.maybe_sent_at is None:
            continue
        until = copy_window.refused_until(adapter, row.provider, row.maybe_sent_at)
        if until is None or now >= until:
            late.append(row)
    return late


def _resend_is_safe(adapter: ProviderAdapter, rows: list[Message]) -> bool:
    """A lost answer may be retried as usual when SMSQ_UNCERTAIN_SEND=resend, or when
    the gateway refuses duplicates for a while and the retry comes well within it."""
    if get_settings().uncertain_send == "resend":
        return True
    window = adapter.duplicate_window_seconds
    if not window:
        return False
    settings = get_settings()
    attempts = max(r.attempts for r in rows)
    longest_wait = backoff.ceiling(
        attempts, settings.retry_base_seconds, settings.retry_cap_seconds
    )
    return longest_wait + settings.tick_seconds < window / 2


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


def fallback_for(row: Message) -> tuple[str | None, list[str]]:
    """The first of the row's fallbacks that may take it now, and why others may not.

    Usable: configured, the message fits its limits (text, parts, sender, flash),
    its account is not blocked and its circuit breaker is not open.
    """
    skipped: list[str] = []
    if row.maybe_sent_at is not None:  # another gateway would send a second copy
        return None, [f"none: {row.provider} may have it already (an answer was lost)"]
    for name in [n.strip() for n in (row.fallbacks or "").split(",") if n.strip()]:
        if name == row.provider:
            continue
        if name not in provider_names() or not provider_settings(name).configured:
            skipped.append(f"{name} is not configured")
            continue
        misfit = _misfit(row, name)
        if misfit:
            skipped.append(f"{name} cannot take it ({misfit})")
            continue
        block = guard.account_block(name)
        if block:
            skipped.append(f"{name} account blocked: {block}")
            continue
        if Breaker(name).is_open():
            skipped.append(f"{name} circuit breaker open")
            continue
        return name, skipped
    return None, skipped


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
    settings = get_settings()
    now = utcnow()
    rerouted: list[str] = []
    waiting: list[str] = []
    with db.session() as s:
        for row in load_rows(s, [r.id for r in rows]):
            if row.status != Status.SENDING.value:
                continue
            attempts = max(0, row.attempts - 1)
            target, skipped = fallback_for(row)
            if target is not None:
                rest = [n for n in row.fallbacks.split(",") if n.strip() and n != target]
                note = f"rerouted from {provider} to {target}: {reason}"
                moved = move(
                    s,
                    row,
                    Status.QUEUED,
                    source="worker",
                    note=note,
                    provider=target,
                    fallbacks=",".join([*rest, provider] if provider not in rest else rest),
                    attempts=attempts,
                    next_attempt_at=now + timedelta(seconds=settings.sweep_after_seconds),
                )
                if moved:
                    record_event(
                        s, row.id, source="worker", kind="reroute", provider=target, note=note
                    )
                    row.note = note
                    s.add(row)
                    rerouted.append(row.id)
                    outcome.rerouted += 1
                continue
            why = f"; fallbacks: {', '.join(skipped)}" if skipped else ""
            if wait is None:
                move(
                    s,
                    row,
                    Status.FAILED,
                    source="worker",
                    error=f"not sent: {reason}{why or '; no fallback'}",
                    attempts=attempts,
                    next_attempt_at=None,
                )
                outcome.failed += 1
                continue
            deadline = row.created_at + timedelta(seconds=settings.retry_deadline_seconds)
            if now + timedelta(seconds=wait) > deadline:
                move(
                    s,
                    row,
                    Status.FAILED,
                    source="worker",
                    error=f"gave up: {reason} past the retry deadline{why}",
                    attempts=attempts,
                    next_attempt_at=None,
                )
                outcome.failed += 1
                continue
            move(
                s,
                row,
                Status.QUEUED,
                source="worker",
                note=f"waiting {wait:.1f}s: {reason}{why or '; no fallback'} (not an attempt)",
                attempts=attempts,
                next_attempt_at=now
                + timedelta(
                    seconds=wait + (settings.sweep_after_seconds if wait <= MAX_COUNTDOWN else 0)
                ),
            )
            waiting.append(row.id)
            outcome.waiting += 1
        s.commit()
    if rerouted:
        requeue(rerouted, 0.0)
    if waiting and wait is not None and wait <= MAX_COUNTDOWN:
        requeue(waiting, wait)
        outcome.retry_in = wait


def _rate_wait(provider: str) -> float:
    """Take a slot of the provider's global limit (0), or the wait still due after
    MAX_RATE_WAIT. The slot stays taken until one window after the gateway's answer,
    which the adapter's HTTP client stamps (see worker.resilience.ratelimit)."""
    settings = provider_settings(provider)
    if not settings.rate_limit:
        return 0.0
    limiter = limiter_for(provider, settings.rate_limit, hold=settings.timeout_seconds + 1)
    limiter.stamp_responses_of(get_adapter(provider)._client)
    return limiter.acquire(MAX_RATE_WAIT)


def _store_results(
    provider: str, rows: list[Message], results: list[SendResult], outcome: SendOutcome
) -> None:
    by_ref = {r.ref: r for r in results}
    now = utcnow()
    first_poll = first_poll_at(provider, now)
    accepted: list[Move] = []
    with db.session() as s:
        for row in load_rows(s, [r.id for r in rows]):
            result = by_ref.get(row.id)
            _attempt_event(s, row, _attempt_outcome(provider, result))
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
                accepted.append(
                    Move(
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
                )
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
        # The usual answer, every message accepted: one UPDATE for the batch.
        outcome.sent += move_many(s, Status.SENT, accepted, source="worker")
        for m in accepted:
            if m.row.status == Status.SENT.value:
                adopt_early_reports(s, m.row)
        s.commit()


def _retry_later(
    rows: list[Message],
    exc: RetryableProviderError,
    requeue: Requeue,
    maybe_sent_at: datetime | None = None,
) -> float | None:
    """Back to `queued` with `next_attempt_at`, or `failed` past the deadline or attempts.
    `maybe_sent_at`: the request may have reached the gateway (its answer was lost);
    kept on each row unless an earlier lost answer is already there."""
    settings = get_settings()
    now = utcnow()
    retry_ids: list[str] = []
    delay_used: float | None = None
    with db.session() as s:
        for row in load_rows(s, [r.id for r in rows]):
            deadline = row.created_at + timedelta(seconds=settings.retry_deadline_seconds)
            attempts = row.attempts - (1 if exc.throttled else 0)
            delay = backoff_delay(attempts, exc.retry_after)
            if exc.throttled:
                _attempt_event(
                    s,
                    row,
                    f"rate-limited by the gateway ({exc}): handed back for {delay:.1f}s, "
                    "not counted",
                    counted=False,
                )
            else:
                _attempt_event(s, row, f"retryable error: {exc}")
            first_lost = row.maybe_sent_at or maybe_sent_at
            if not exc.throttled and (
                attempts >= settings.max_attempts or now + timedelta(seconds=delay) > deadline
            ):
                lost = "; an earlier answer was lost: the gateway may have it" if first_lost else ""
                move(
                    s,
                    row,
                    Status.FAILED,
                    source="worker",
                    raw=exc.raw,
                    error=f"gave up after {attempts} attempt(s): {exc}{lost}",
                    maybe_sent_at=first_lost,
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
                maybe_sent_at=first_lost,
                next_attempt_at=now + timedelta(seconds=delay + settings.sweep_after_seconds)
                if delay <= MAX_COUNTDOWN
                else now + timedelta(seconds=delay),
            )
            retry_ids.append(row.id)
            delay_used = delay
        s.commit()
    if retry_ids:  # a batch is one provider's
        kind = "throttled" if exc.throttled else "error"
        metrics.RETRIES.labels(rows[0].provider, kind).inc(len(retry_ids))
    if retry_ids and delay_used is not None and delay_used <= MAX_COUNTDOWN:
        requeue(retry_ids, delay_used)
    return delay_used


def _hand_back(rows: list[Message], wait: float, requeue: Requeue, note: str) -> None:
    """Return claimed rows to the queue without counting an attempt (rate-limit wait)."""
    settings = get_settings()
    now = utcnow()
    with db.session() as s:
        for row in load_rows(s, [r.id for r in rows]):
            _attempt_event(s, row, f"rate-limited: {note}; handed back, not counted", counted=False)
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
    """A permanent error for the whole request: failed, never retried."""
    with db.session() as s:
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
    with db.session() as s:
        for row in load_rows(s, [r.id for r in rows]):
            _attempt_event(s, row, f"uncertain: {note}")
            row.claimed_by = liveness.RELEASED
            row.note = f"uncertain send: {note}" + (
                "; the sweep will ask the gateway whether it has it"
                if policy == "reconcile"
                else ""
            )
            s.add(row)
        s.commit()
    if policy != "reconcile":
        reconcile.settle([r.id for r in rows], source="worker", cause=note)


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
