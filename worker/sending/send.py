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

import itertools
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import redis
from sqlalchemy import update

from producer import db
from producer.api import gateway_schedules
from producer.limits import limits_for
from producer.models import Message, utcnow
from producer.settings import get_settings, provider_settings
from producer.status import Status
from producer.traffic import NORMAL, RANK
from worker.gateways.base import (
    OutgoingMessage,
    PermanentProviderError,
    ProviderAdapter,
    RetryableProviderError,
    SendResult,
)
from worker.gateways.registry import get_adapter
from worker.ops import metrics
from worker.resilience import backoff, liveness
from worker.resilience.breaker import Breaker, Decision
from worker.resilience.ratelimit import limiter_for
from worker.sending import copy_window, guard
from worker.sending.decisions import expired_ids
from worker.sending.divert import _divert
from worker.sending.outcome import Requeue, SendOutcome
from worker.sending.record import (
    _breaker_event,
    _expire,
    _fail,
    _hand_back,
    _mark_uncertain,
    _retry_later,
    _store_results,
)
from worker.store import retry as store_retry
from worker.store.transitions import claim_many, fence, load_rows, move
from worker.tracking.callback_urls import dlr_url_for

log = logging.getLogger("smsq.sending")

# Waits for a rate-limit slot up to this long happen in the task; longer ones re-queue.
# Long enough that a backlog waits at the limiter (where priorities are kept) rather
# than churning through the broker: a hand-back costs store writes, and a countdown
# task waits in a worker's memory, where it would sit in front of a one-time code.
MAX_RATE_WAIT = 10.0

# The claim is tried again for this long while the store is down; then the task is
# queued again after CLAIM_REQUEUE_SECONDS (the rows stay `queued`, nothing is lost).
CLAIM_RETRY_SECONDS = 30.0
CLAIM_REQUEUE_SECONDS = 10.0


@dataclass
class _Stage:
    """How far a batch got: whether its gateway request was made (then a batch that
    breaks off is an uncertain send; before it, the rows can simply go back)."""

    requested: bool = False


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
    claimed rows, as the claim's UPDATE returned them (no second read). If the store
    fails before the commit's answer arrives, the retry (`retake`) finds the rows this
    claim already holds by its token."""
    with db.session() as s:
        claimed = claim_many(s, ids, utcnow(), token, retake=retake)
        s.commit()
        return claimed


def _unclaim(rows: list[Message]) -> None:
    """A batch broke off before its gateway request (a store or Redis error): nothing
    went out, so the rows go back to `queued` (the claim's attempt given back) for the
    sweep to queue again, instead of being settled as uncertain sends."""
    now = utcnow()
    retry_at = now + timedelta(seconds=get_settings().sweep_after_seconds)
    tokens = {r.id: r.claim_token for r in rows}

    def write() -> None:
        with db.session() as s:
            fence(s, rows)  # the check below, made in the UPDATE itself
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


@dataclass
class _Batch:
    """One gateway request in the making: what the gates let through, and the state
    the call and its record need (the adapter, the breaker's decision)."""

    provider: str
    rows: list[Message]
    requeue: Requeue
    outcome: SendOutcome
    adapter: ProviderAdapter
    breaker: Breaker
    trial: bool = False
    allowed: Decision | None = None  # the breaker's decision this request goes under


def _send_batch(
    provider: str, rows: list[Message], requeue: Requeue, outcome: SendOutcome, stage: _Stage
) -> None:
    """Gate (copy window, guard, breaker, rate limit) -> call -> record, for one gateway
    request. Every store write after the request goes through `_durably`: the answer
    is only in memory until it is committed."""
    batch = _Batch(provider, rows, requeue, outcome, get_adapter(provider), Breaker(provider))
    if not _gate(batch):
        return
    requested_at = utcnow()
    stage.requested = True
    try:
        results = batch.adapter.send([_outgoing(r) for r in batch.rows])
    except RetryableProviderError as exc:
        _on_retryable(batch, exc, requested_at)
    except PermanentProviderError as exc:
        _on_permanent(batch, exc)
    except Exception as exc:  # a bug or a surprise after the request: uncertain
        _on_surprise(batch, exc)
    else:
        _on_answer(batch, results)


def _gate(batch: _Batch) -> bool:
    """Whether the request may go now, with `batch.rows` narrowed to what may go;
    what may not is settled, diverted or handed back here."""
    provider, adapter = batch.provider, batch.adapter
    if not _drop_expired(batch):
        return False
    late = _past_duplicate_window(adapter, batch.rows)
    if late:
        window = adapter.duplicate_window_seconds or 0
        note = f"not resent: an earlier request's answer was lost and {provider} " + (
            f"would no longer refuse a copy ({window:g} s window)" if window else "may have it"
        )
        store_retry.durably("marking uncertain", partial(_mark_uncertain, late, note))
        batch.rows = [r for r in batch.rows if r not in late]
        if not batch.rows:
            return False
    block = guard.account_block(provider)
    if block:
        _divert_durably(batch, batch.rows, f"{provider} account blocked: {block}", None)
        return False
    decision = batch.breaker.allow()
    batch.trial, batch.allowed = decision.trial, decision
    if not decision.allowed:
        # A row whose answer was lost goes now: the gateway refuses a copy only for a
        # while (`_past_duplicate_window`), so after the cool-down a resend could be
        # a second copy. Such rows are few; the rest wait.
        held = [r for r in batch.rows if r.maybe_sent_at is None]
        if held:
            _divert_durably(batch, held, f"{provider} circuit breaker open", decision.wait)
        batch.rows = [r for r in batch.rows if r.maybe_sent_at is not None]
        if not batch.rows:
            return False
    # Checked again after the slot: a wait for it (or for a better priority) may have
    # run the validity out, and nothing stale goes out.
    return _take_rate_slot(batch) and _drop_expired(batch)


def _drop_expired(batch: _Batch) -> bool:
    """Settle the rows past their validity (`expired`); whether any row is left to send."""
    stale = expired_ids([(r.id, r.expires_at) for r in batch.rows], utcnow())
    if not stale:
        return True
    rows = [r for r in batch.rows if r.id in stale]
    _durably("expiring", lambda c: _expire(rows, c), batch.outcome)
    batch.rows = [r for r in batch.rows if r.id not in stale]
    if not batch.rows and batch.trial:
        batch.breaker.release_trial()
    return bool(batch.rows)


def _divert_durably(batch: _Batch, rows: list[Message], reason: str, wait: float | None) -> None:
    _durably(
        "diverting",
        lambda c: _divert(batch.provider, rows, reason, wait, batch.requeue, c),
        batch.outcome,
    )


def _take_rate_slot(batch: _Batch) -> bool:
    """A slot of the gateway's global rate, or the rows handed back for the wait."""
    rank = min(RANK.get(r.priority, RANK[NORMAL]) for r in batch.rows)
    wait = _rate_wait(batch.provider, rank)
    if wait <= 0:
        return True
    if batch.trial:
        batch.breaker.release_trial()
    note = f"rate limit: next slot in {wait:.2f}s"
    rows, requeue = batch.rows, batch.requeue
    store_retry.durably("handing back", lambda: _hand_back(rows, wait, requeue, note=note))
    batch.outcome.retry_in = wait
    return False


def _on_retryable(batch: _Batch, exc: RetryableProviderError, requested_at: datetime) -> None:
    provider, rows, breaker = batch.provider, batch.rows, batch.breaker
    metrics.SEND_ERRORS.labels(provider, "retryable").inc()
    if exc.maybe_sent and not _resend_is_safe(batch.adapter, rows):
        # The gateway may have the messages: not a plain retry (SMSQ_UNCERTAIN_SEND).
        if breaker.record_failure() is not None:
            _breaker_event(rows, f"circuit breaker of {provider} opened: answers lost")
        store_retry.durably(
            "marking uncertain", partial(_mark_uncertain, rows, f"answer lost: {exc}")
        )
        return
    opened = None
    if exc.throttled:  # back-pressure, not a failure: the trial goes back unused
        if batch.trial:
            breaker.release_trial()
    else:
        opened = breaker.record_failure()
    lost_at = requested_at if exc.maybe_sent else None
    batch.outcome.retry_in = store_retry.durably(
        "storing a retry", partial(_retry_later, rows, exc, batch.requeue, lost_at)
    )
    if opened is not None:
        after = (
            "the half-open trial failed"
            if batch.trial
            else f"{breaker.failures} retryable failures in a row"
        )
        _breaker_event(
            rows,
            f"circuit breaker of {provider} opened after {after}: "
            f"no calls to {provider} for {breaker.cooldown:g}s",
        )


def _on_permanent(batch: _Batch, exc: PermanentProviderError) -> None:
    metrics.SEND_ERRORS.labels(batch.provider, "permanent").inc()
    closed = batch.breaker.record_success(batch.allowed)  # the gateway answered: it is up
    store_retry.durably("storing a failure", partial(_fail, batch.rows, str(exc), raw=exc.raw))
    batch.outcome.failed += len(batch.rows)
    if closed:
        _breaker_event(
            batch.rows, f"circuit breaker of {batch.provider} closed: the gateway answered"
        )


def _on_surprise(batch: _Batch, exc: Exception) -> None:
    if batch.trial:
        batch.breaker.release_trial()
    log.exception("unexpected error sending %d message(s) via %s", len(batch.rows), batch.provider)
    note = f"{type(exc).__name__}: {exc}"[:300]
    rows = batch.rows
    store_retry.durably("marking uncertain", lambda: _mark_uncertain(rows, note))


def _on_answer(batch: _Batch, results: list[SendResult]) -> None:
    provider, rows = batch.provider, batch.rows
    metrics.SEND_REQUESTS.labels(provider).inc()
    closed = batch.breaker.record_success(batch.allowed)
    tries = itertools.count()

    def store(counts: SendOutcome) -> None:  # the claimed rows as they are, on a first try
        _store_results(provider, rows, results, counts, fresh=next(tries) == 0)

    _durably("storing the gateway's answer", store, batch.outcome)
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


def _rate_wait(provider: str, rank: int) -> float:
    """Take a slot of the provider's global limit (0) as a request of `rank` (high
    first), or the wait still due after MAX_RATE_WAIT. The slot stays taken until one
    window after the gateway's answer, which the adapter's HTTP client stamps (see
    worker.resilience.ratelimit)."""
    settings = provider_settings(provider)
    if not settings.rate_limit:
        return 0.0
    limiter = limiter_for(provider, settings.rate_limit, hold=settings.timeout_seconds + 1)
    limiter.stamp_responses_of(get_adapter(provider)._client)
    return limiter.acquire(MAX_RATE_WAIT, rank)
