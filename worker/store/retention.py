"""Retention: phone numbers and texts are personal data, so they are not kept forever.

SMSQ_RETENTION_DAYS (default 90; 0 keeps everything) after a message became final
(`updated_at` of a delivered, undelivered, expired, rejected or failed row), its
number is masked (`2438512****67`), its text removed (the segment count, encoding,
statuses, times, attempts, error and every event stay) and the raw payloads of its
events (the gateways' answers and reports, which repeat the number) cleared; the row
is marked `redacted_at`.

It runs as its own periodic task on the maintenance queue (beat sends it every
RETENTION_EVERY_SECONDS), never in the tick: one run takes batches of BATCH rows,
each in its own short transaction found through `ix_messages_retention` (final,
not yet redacted rows by `updated_at`: the index holds only what is left to do),
pauses between batches as long as the batch took so writers of the hot path get
the store (SQLite has one writer), and stops after RUN_BUDGET_SECONDS.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, update
from sqlmodel import Session, select

from producer import db
from producer.models import FINAL, Message, MessageEvent, status_is, utcnow
from producer.settings import get_settings

log = logging.getLogger("smsq.retention")

BATCH = 500  # rows per transaction
RUN_BUDGET_SECONDS = 2.0  # one run stops taking batches after this
RETENTION_EVERY_SECONDS = 30.0  # beat's period for the task
MASK = "****"
KEEP_HEAD, KEEP_TAIL = 7, 2


def mask_number(number: str) -> str:
    """`243851234567` -> `2438512****67`: the country and network stay readable for
    statistics, the subscriber part does not. At least three digits are always hidden
    (a short number keeps fewer at the head); a masked number stays as it is."""
    if MASK in number:
        return number
    if len(number) < KEEP_TAIL + 4:
        return MASK
    head = min(KEEP_HEAD, len(number) - KEEP_TAIL - 3)
    return number[:head] + MASK + number[-KEEP_TAIL:]


@dataclass
class RetentionRun:
    messages: int = 0
    events: int = 0
    batches: int = 0
    seconds: float = 0.0


def cutoff(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)


def redact_batch(before: datetime, limit: int = BATCH) -> tuple[int, int]:
    """One transaction: up to `limit` final rows that became final before `before`,
    oldest first; (messages, events) redacted."""
    with db.session() as s:
        rows = s.exec(
            select(Message.id, Message.to)
            .where(
                status_is(*FINAL),  # the literal statuses of ix_messages_retention
                Message.redacted_at.is_(None),  # type: ignore[union-attr]
                Message.updated_at < before,  # type: ignore[arg-type]
            )
            .order_by(Message.updated_at)  # type: ignore[arg-type]
            .limit(limit)
            # PostgreSQL: two runs overlapping (a slow one and the next) take different
            # rows instead of waiting on each other.
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return 0, 0
        messages = _redact_messages(s, [(r.id, r.to) for r in rows])
        events = _clear_raw(s, [r.id for r in rows])
        s.commit()
    return messages, events


def _redact_messages(s: Session, rows: list[tuple[str, str]]) -> int:
    now = utcnow()
    result = s.connection().execute(
        update(Message)
        .where(
            Message.id == bindparam("_id"),  # type: ignore[arg-type]
            Message.redacted_at.is_(None),  # type: ignore[union-attr]
        )
        .values(to=bindparam("_to"), text="", redacted_at=now),
        [{"_id": message_id, "_to": mask_number(to)} for message_id, to in rows],
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _clear_raw(s: Session, ids: list[str]) -> int:
    result = s.connection().execute(
        update(MessageEvent)
        .where(
            MessageEvent.message_id.in_(ids),  # type: ignore[union-attr]
            MessageEvent.raw.is_not(None),  # type: ignore[union-attr]
        )
        .values(raw=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def run(
    now: datetime | None = None,
    budget: float = RUN_BUDGET_SECONDS,
    batch: int = BATCH,
    sleep: bool = True,
) -> RetentionRun:
    """The periodic task's work: batches until none is left or the budget is spent."""
    done = RetentionRun()
    days = get_settings().retention_days
    if days <= 0:
        return done
    before = cutoff(now or utcnow(), days)
    started = time.monotonic()
    while time.monotonic() - started < budget:
        took = time.monotonic()
        messages, events = redact_batch(before, batch)
        done.messages += messages
        done.events += events
        done.batches += 1 if messages else 0
        if messages < batch:
            break
        if sleep:  # leave the store to the hot path as long as this batch held it
            time.sleep(min(time.monotonic() - took, 0.5))
    done.seconds = time.monotonic() - started
    if done.messages:
        log.info(
            "retention: %d message(s) older than %d days masked, %d event payload(s) "
            "removed in %.2f s",
            done.messages,
            days,
            done.events,
            done.seconds,
        )
    return done
