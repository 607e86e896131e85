"""Keep the dashboard's summary table (`ui_stats`) off the hot path.

Beat queues `smsq.ui_rollup` every SMSQ_UI_ROLLUP_SECONDS. Each run reads the
events past the watermark (`ui_rollup.last_event_id`) in id order, in small
batches within a time budget, and adds what they count to the buckets. The
send path writes nothing extra; the pages read a few hundred summary rows
instead of scanning the messages.

- The watermark moves by a conditional UPDATE, first in the batch's
  transaction: of two roll-ups racing (two workers), one wins the row and the
  other rolls back having written nothing, so no event is counted twice.
- Events younger than `LAG` are left for the next run: on PostgreSQL an event
  id is taken at insert and seen at commit, so a smaller id could still commit
  after a larger one; the lag gives its transaction time to land first (an
  event later than that is missed by the dashboard, never counted twice).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from producer import db
from producer.models import Message, MessageEvent, UiRollup, UiStat, utcnow
from worker.ui import stats

log = logging.getLogger("smsq.ui.rollup")

NAME = "events"
BATCH = 2000
BUDGET_SECONDS = 0.5
LAG = timedelta(seconds=5)
PRUNE_EVERY_SECONDS = 600.0
_pruned_at = 0.0


@dataclass
class Rolled:
    events: int = 0
    batches: int = 0
    watermark: int = 0


def run(
    batch: int = BATCH,
    budget: float = BUDGET_SECONDS,
    lag: timedelta = LAG,
    now: datetime | None = None,
) -> Rolled:
    """Roll batches up until caught up or `budget` seconds are spent; prune old buckets."""
    done = Rolled()
    started = time.monotonic()
    while True:
        n, watermark = roll_batch(batch, lag, now)
        done.events += n
        done.batches += 1 if n else 0
        done.watermark = watermark
        if n < batch or time.monotonic() - started >= budget:
            break
    global _pruned_at
    if time.monotonic() - _pruned_at >= PRUNE_EVERY_SECONDS:  # a write: not every run
        _pruned_at = time.monotonic()
        prune(now)
    return done


def _state(s: Session) -> UiRollup:
    state = s.get(UiRollup, NAME)
    if state is not None:
        return state
    try:
        with s.begin_nested():
            s.add(UiRollup(name=NAME, last_event_id=0, events=0))
    except IntegrityError:  # another roll-up created it first
        pass
    state = s.get(UiRollup, NAME)
    assert state is not None
    return state


def _watermark(s: Session) -> int:
    state = _state(s)
    s.commit()
    return int(state.last_event_id)


def roll_batch(
    batch: int = BATCH, lag: timedelta = LAG, now: datetime | None = None
) -> tuple[int, int]:
    """One batch: (events rolled up, the watermark after it)."""
    cutoff = (now or utcnow()) - lag
    with db.session() as s:
        mark = _watermark(s)
        rows = s.exec(
            select(
                MessageEvent.id,
                MessageEvent.message_id,
                MessageEvent.provider,
                MessageEvent.kind,
                MessageEvent.new_status,
                MessageEvent.applied,
                MessageEvent.created_at,
            )
            .where(col(MessageEvent.id) > mark)
            .order_by(col(MessageEvent.id))
            .limit(batch)
        ).all()
        events: list[stats.Event] = []
        for row in rows:
            if stats.as_utc(row[6]) > cutoff:
                break
            events.append(stats.Event(*row))  # type: ignore[arg-type]
        if not events:
            return 0, mark
        new_mark = int(events[-1].id)
        won = s.execute(
            update(UiRollup)
            .where(col(UiRollup.name) == NAME, col(UiRollup.last_event_id) == mark)
            .values(
                last_event_id=new_mark,
                events=UiRollup.events + len(events),
                updated_at=utcnow(),
            )
        )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            s.rollback()  # another roll-up took this batch
            return 0, mark
        add_cells(s, stats.contributions(events, _facts(s, events)))
        s.commit()
    return len(events), new_mark


def _facts(s: Session, events: list[stats.Event]) -> dict[str, stats.MessageFacts]:
    ids = sorted({e.message_id for e in events if stats.needs_facts(e) and e.message_id})
    found: dict[str, stats.MessageFacts] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for mid, created, send_at, segments in s.exec(
            select(Message.id, Message.created_at, Message.send_at, Message.segments).where(
                col(Message.id).in_(chunk)
            )
        ):
            due = max(created, send_at) if send_at is not None else created
            found[mid] = stats.MessageFacts(due, int(segments or 0))
    return found


def add_cells(s: Session, cells: dict[stats.Key, stats.Cell]) -> None:
    """Add `cells` to the stored buckets (read, add, write: the watermark row, held
    by this transaction, keeps every other roll-up out meanwhile)."""
    keys = list(cells)
    existing: dict[stats.Key, UiStat] = {}
    for start in range(0, len(keys), 200):
        chunk = keys[start : start + 200]
        for row in s.exec(
            select(UiStat).where(
                tuple_(UiStat.width, UiStat.bucket, UiStat.provider, UiStat.status).in_(chunk)
            )
        ):
            existing[(row.width, row.bucket, row.provider, row.status)] = row
    for key, cell in cells.items():
        row = existing.get(key)
        if row is None:
            width, bucket, provider, status = key
            s.add(
                UiStat(
                    width=width,
                    bucket=bucket,
                    provider=provider,
                    status=status,
                    count=cell.count,
                    segments=cell.segments,
                    hist=stats.dump_hist(cell.hist),
                )
            )
            continue
        merged = stats.merge_hist(stats.load_hist(row.hist), cell.hist)
        row.count += cell.count
        row.segments += cell.segments
        row.hist = stats.dump_hist(merged)
        s.add(row)


def prune(now: datetime | None = None) -> None:
    """Drop buckets older than the pages ever show (`stats.KEEP`)."""
    at = (now or utcnow()).timestamp()
    with db.session() as s:
        for width, keep in stats.KEEP.items():
            s.execute(
                delete(UiStat).where(
                    col(UiStat.width) == width, col(UiStat.bucket) < int(at - keep)
                )
            )
        s.commit()


def status() -> dict[str, object]:
    """How far behind the roll-up is: its watermark, the newest event id, last run."""
    from sqlalchemy import func

    with db.session() as s:
        state = s.get(UiRollup, NAME)
        newest = s.exec(select(func.max(MessageEvent.id))).one()
    return {
        "watermark": state.last_event_id if state else 0,
        "newest_event": int(newest or 0),
        "behind": max(0, int(newest or 0) - (state.last_event_id if state else 0)),
        "updated_at": state.updated_at if state else None,
    }
