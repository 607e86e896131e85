"""What beat's short tick does: queue due sends and polls, settle uncertain sends.

Time lives in the store, not in the broker: scheduled sends (`send_at`),
retries (`next_attempt_at`) and polls (`next_poll_at`) are columns, and this
tick, run every SMSQ_TICK_SECONDS, queues what is due. Rows left `queued`
because the broker was down at enqueue are queued again here too, and the
tasks a dead worker had reserved go back to their queues (`takeover`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlmodel import select

from producer import db
from producer.limits import limits_for
from producer.models import ACTIVE, Message, status_is, utcnow
from producer.queues import VISIBILITY_TIMEOUT
from producer.settings import get_settings
from producer.status import Status
from producer.traffic import expiry_error
from worker.resilience import liveness, reconcile, takeover
from worker.store.transitions import move
from worker.tracking import dlr, notify

log = logging.getLogger("smsq.maintenance")

POLL_LEASE_SECONDS = 120.0  # a leased poll not done by then is picked again
GIVE_BACK_SECONDS = 5.0  # a lease whose task could not be published is due again then
TICK_LIMIT = 5000  # rows per kind per tick, so one tick stays short


@dataclass
class TickResult:
    expired: int = 0
    scheduled: int = 0
    requeued: int = 0
    taken_over: int = 0
    polls: int = 0
    uncertain: int = 0
    notifications: int = 0
    expired_reports: int = 0


SendQueue = Callable[..., None]  # (ids, *, priority)
PollQueue = Callable[[str, Sequence[str]], None]
NotifyQueue = Callable[[Sequence[int]], None]


def tick(
    queue_send: SendQueue, queue_poll: PollQueue, queue_notify: NotifyQueue | None = None
) -> TickResult:
    result = TickResult()
    result.expired = _expire_stale()  # before anything stale could be queued
    result.scheduled = _release_scheduled()
    result.requeued = _queue_due_sends(queue_send)
    result.taken_over = takeover.restore_dead()
    result.polls = _queue_due_polls(queue_poll)
    result.uncertain = _settle_stuck_sending()
    if queue_notify is not None:
        result.notifications = notify.queue_due(queue_notify)
    result.expired_reports = dlr.expire_unmatched_reports()
    return result


def _expire_stale() -> int:
    """Scheduled or queued rows past their validity (ttl) end `expired` instead of being
    queued, whether due now or held for later (a long retry wait): they must never be
    sent, and the app hears of it when the validity runs out, not when a retry was due."""
    now = utcnow()
    waiting = (Status.SCHEDULED.value, Status.QUEUED.value)
    with db.session() as s:
        rows = s.exec(
            select(Message)
            .where(status_is(*waiting), Message.expires_at <= now)  # type: ignore[operator]
            .limit(TICK_LIMIT)
            .with_for_update(skip_locked=True)  # see _lease_due
        ).all()
        moved = sum(
            move(
                s,
                row,
                Status.EXPIRED,
                source="beat",
                note="validity (ttl) ran out while waiting",
                only_from=frozenset({Status.SCHEDULED, Status.QUEUED}),
                error=expiry_error(row.ttl, row.expires_at, row.maybe_sent_at is not None),
                next_attempt_at=None,
            )
            for row in rows
        )
        s.commit()
    return moved


def _release_scheduled() -> int:
    now = utcnow()
    with db.session() as s:
        rows = s.exec(
            select(Message)
            .where(status_is(Status.SCHEDULED.value), Message.send_at <= now)  # type: ignore[operator]
            .limit(TICK_LIMIT)
            .with_for_update(skip_locked=True)  # see _lease_due
        ).all()
        for row in rows:
            move(
                s,
                row,
                Status.QUEUED,
                source="beat",
                note="scheduled time reached",
                next_attempt_at=now,
            )
        s.commit()
    return len(rows)


def _lease_due(status: Status, column: str, until: datetime) -> list[Message]:
    """Rows in `status` whose `column` time has passed, each moved on to `until` by a
    conditional UPDATE, so two beats (or two ticks) never queue the same row twice."""
    now = utcnow()
    due_at = getattr(Message, column)
    with db.session() as s:
        rows = s.exec(
            select(Message)
            .where(status_is(status.value), due_at <= now)  # partial index: see status_is
            .order_by(due_at)
            .limit(TICK_LIMIT)
            # PostgreSQL: lock the rows up front and skip those another transaction
            # holds (a worker claiming them, another tick), so a tick never waits on a
            # row lock: updating them one by one in due order while a claim's UPDATE
            # locks in its own order would deadlock. SQLite ignores it (one writer).
            .with_for_update(skip_locked=True)
        ).all()
        leased: list[Message] = []
        for row in rows:
            done = s.execute(
                update(Message)
                .where(
                    Message.id == row.id,  # type: ignore[arg-type]
                    Message.status == status.value,  # type: ignore[arg-type]
                    due_at == getattr(row, column),
                )
                .values({column: until})
            )
            if done.rowcount == 1:  # type: ignore[attr-defined]
                leased.append(row)
        s.commit()
    return leased


def _queue_due_sends(queue_send: SendQueue) -> int:
    """Queue rows whose `next_attempt_at` has passed; push it on so the next tick skips them."""
    later = utcnow() + timedelta(seconds=get_settings().sweep_after_seconds)
    leased = _lease_due(Status.QUEUED, "next_attempt_at", later)
    groups: dict[tuple[str, str, str, str | None], list[str]] = {}
    for row in leased:
        groups.setdefault((row.provider, row.priority, row.text, row.sender), []).append(row.id)
    for (provider, priority, _t, _s), ids in groups.items():
        size = limits_for(provider).max_batch
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            try:
                queue_send(chunk, priority=priority)
            except Exception:  # broker down: the rows stay queued, due again shortly
                log.warning("could not queue %d due send(s)", len(chunk), exc_info=True)
                _give_back(chunk, "next_attempt_at", later)
    return len(leased)


def _queue_due_polls(queue_poll: PollQueue) -> int:
    lease = utcnow() + timedelta(seconds=POLL_LEASE_SECONDS)
    leased = _lease_due(Status.SENT, "next_poll_at", lease)
    by_provider: dict[str, list[str]] = {}
    for row in leased:
        by_provider.setdefault(row.provider, []).append(row.id)
    for provider, ids in by_provider.items():
        size = max(limits_for(provider).max_status_batch, 20)
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            try:
                queue_poll(provider, chunk)
            except Exception:  # broker down: asked again shortly, not after the lease
                log.warning("could not queue polls for %s", provider, exc_info=True)
                _give_back(chunk, "next_poll_at", lease)
    return len(leased)


def _give_back(ids: list[str], column: str, until: datetime) -> None:
    """Leased rows whose task could not be published (the broker down) are due again
    in GIVE_BACK_SECONDS rather than when the lease ends (up to minutes later). Only
    rows still holding this lease; best effort (the lease is the fallback)."""
    due = utcnow() + timedelta(seconds=GIVE_BACK_SECONDS)
    try:
        with db.session() as s:
            s.execute(
                update(Message)
                .where(
                    Message.id.in_(ids),  # type: ignore[union-attr]
                    getattr(Message, column) == until,
                )
                .values({column: due})
            )
            s.commit()
    except Exception:
        log.warning("could not give back %d lease(s)", len(ids), exc_info=True)


def _settle_stuck_sending() -> int:
    """Rows in `sending` whose worker died mid-send, or whose task hangs.

    A row is settled once its claim is `liveness.DEAD_AFTER` seconds old when its
    claiming process has stopped beating (SIGKILL, OOM, a lost host) or gave the
    claim up after an uncertain send (`liveness.RELEASED`), or in any case
    after SMSQ_STUCK_SENDING_SECONDS. SMSQ_UNCERTAIN_SEND decides (see
    `worker.resilience.reconcile`): `reconcile` (default) asks the gateway and resends only
    what it confirms it never got, `resend` queues them again (at-least-once),
    `fail` marks them failed (at-most-once). A row whose lookup failed is asked
    again after LOOKUP_RETRY_SECONDS.
    """
    now = utcnow()
    stuck = min(get_settings().stuck_sending_seconds, VISIBILITY_TIMEOUT)
    hung_cutoff = now - timedelta(seconds=stuck)
    dead_cutoff = now - timedelta(seconds=min(liveness.DEAD_AFTER, stuck))
    retry_cutoff = now - timedelta(seconds=reconcile.LOOKUP_RETRY_SECONDS)
    with db.session() as s:
        candidates = s.exec(
            select(Message.id, Message.claimed_at, Message.claimed_by)
            .where(
                # The active rows' index (SQLite cannot tell `= 'sending'` implies its IN).
                status_is(*ACTIVE),
                status_is(Status.SENDING.value),
                Message.claimed_at <= dead_cutoff,  # type: ignore[operator]
                # Not asked about since the claim (the claim sets both times), or asked
                # LOOKUP_RETRY_SECONDS ago: a failed lookup touches `updated_at`.
                or_(
                    Message.updated_at == Message.claimed_at,  # type: ignore[arg-type]
                    Message.updated_at <= retry_cutoff,  # type: ignore[operator]
                ),
            )
            .order_by(Message.claimed_at)  # type: ignore[arg-type]
            .limit(TICK_LIMIT)
        ).all()
    if not candidates:
        return 0
    claimers = {c.claimed_by for c in candidates if c.claimed_by}
    gone = liveness.dead(claimers - {liveness.RELEASED}) | {liveness.RELEASED}
    ids = [
        c.id
        for c in candidates
        if c.claimed_by in gone or (c.claimed_at is not None and c.claimed_at <= hung_cutoff)
    ]
    if not ids:
        return 0
    return reconcile.settle(ids, source="beat", cause="worker lost mid-send").total
