"""Apply status changes to stored messages through the one state machine.

Every change is a conditional UPDATE (`WHERE status = <what we read>`), so
two workers, a poll and a push racing on one row can never move it backwards
or twice. Whatever is not applied (late, duplicate, out of order, unknown id)
is still stored as an event with its raw payload.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, event, insert, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, select

from producer.models import Message, MessageEvent, utcnow
from producer.status import Status, can_move
from worker.ops import metrics
from worker.resilience import liveness
from worker.tracking import notify

log = logging.getLogger("smsq.transitions")
_EVENTS = "smsq_pending_events"
_COUNTS = "smsq_pending_counts"
_FENCE = "smsq_claim_fence"


def dump_raw(raw: Any) -> str | None:
    if raw is None:
        return None
    try:
        return json.dumps(raw, default=str, ensure_ascii=False)[:20000]
    except (TypeError, ValueError):
        return json.dumps(repr(raw))[:20000]


def record_event(
    s: Session,
    message_id: str | None,
    *,
    source: str,
    kind: str,
    provider: str | None = None,
    provider_message_id: str | None = None,
    old: str | None = None,
    new: str | None = None,
    applied: bool = True,
    note: str | None = None,
    raw: Any = None,
) -> None:
    """Queue an event in `s`; all of a transaction's events are inserted at its commit,
    in one statement (a bulk send records three per message)."""
    s.info.setdefault(_EVENTS, []).append(
        {
            "message_id": message_id,
            "provider": provider,
            "provider_message_id": provider_message_id,
            "source": source,
            "kind": kind,
            "old_status": None if old is None else str(old),
            "new_status": None if new is None else str(new),
            "applied": applied,
            "note": note,
            "raw": dump_raw(raw),
            "created_at": utcnow(),
        }
    )


@event.listens_for(Session, "before_commit")
def _insert_events(s: Session) -> None:
    rows = s.info.pop(_EVENTS, None)
    if rows:
        s.connection().execute(_events_insert(), rows)


@functools.cache
def _events_insert() -> Any:
    """The events' INSERT on the table itself (Core, built once): every transaction of
    a send has one."""
    return insert(MessageEvent.__table__)  # type: ignore[attr-defined]


def count_status(
    s: Session, provider: str, status: str, amount: int = 1, priority: str | None = None
) -> None:
    """Count a status change in `smsq_messages_total` (and, with its priority, in
    `smsq_priority_messages_total`) once `s` commits: a write that fails and is tried
    again (the store was down) is counted once, when it lands."""
    counts: dict[tuple[str, str, str | None], int] = s.info.setdefault(_COUNTS, {})
    key = (provider, status, priority)
    counts[key] = counts.get(key, 0) + amount


@event.listens_for(Session, "after_commit")
def _publish_counts(s: Session) -> None:
    for (provider, status, priority), amount in s.info.pop(_COUNTS, {}).items():
        metrics.MESSAGES.labels(provider, status).inc(amount)
        if priority is not None:
            metrics.MESSAGES_BY_PRIORITY.labels(provider, priority, status).inc(amount)


@event.listens_for(Session, "after_rollback")
def _drop_events(s: Session) -> None:
    s.info.pop(_EVENTS, None)
    s.info.pop(_COUNTS, None)


def fence(s: Session, claimed: Iterable[Message]) -> None:
    """Make every `move` (and `move_many`) of these rows in `s` conditional on the claim
    each one carries here: the row must still be `sending` under that `claim_token`,
    in the UPDATE itself. Otherwise nothing is written, and the stale write is logged
    and kept as an event that changed nothing.

    A worker passes the rows as it claimed them (not fresh copies) to every write it
    makes after its request: one cut off from the store for longer than its heartbeat
    (a partition, a long pause) may find, when it comes back with its answers, that
    beat has settled its claims and another worker has claimed the rows since.
    """
    s.info.setdefault(_FENCE, {}).update({r.id: r.claim_token for r in claimed})


def _unfence(s: Session, message_id: str) -> None:
    """The writer's claim is done with (the row has left `sending` under it, in this
    transaction): later moves in `s`, such as early reports applied, are not fenced."""
    s.info.get(_FENCE, {}).pop(message_id, None)


def fenced(s: Session, message_id: str) -> tuple[bool, str | None]:
    """(whether writes to `message_id` in `s` are fenced, the claim token they need)."""
    held: dict[str, str | None] = s.info.get(_FENCE, {})
    return message_id in held, held.get(message_id)


def update_held(s: Session, claimed: Iterable[Message], **values: Any) -> set[str]:
    """Set `values` (no status change) on those of `claimed` still `sending` under the
    claim each carries, one conditional UPDATE per claim token; the ids written. The
    `fence` of a write that is not a `move` (giving a claim up after an uncertain send)."""
    by_token: dict[str | None, list[str]] = {}
    for row in claimed:
        by_token.setdefault(row.claim_token, []).append(row.id)
    done: set[str] = set()
    for token, ids in by_token.items():
        done |= set(
            s.connection()
            .execute(
                update(Message)
                .where(
                    Message.id.in_(ids),  # type: ignore[union-attr]
                    Message.status == Status.SENDING.value,
                    Message.claim_token == token,  # type: ignore[arg-type]
                )
                .values(**values)
                .returning(Message.id)
            )
            .scalars()
        )
    return done


def stale_write(
    s: Session,
    row: Message,
    new: Status | None,
    source: str,
    raw: Any = None,
    status: str | None = None,
) -> None:
    """A fenced write to a row no longer under the writer's claim: nothing changes; it is
    logged, and kept as an event that was not applied. `status`: the row's status now,
    when `row` (the writer's copy) does not show it."""
    status = status or row.status
    now = "sending under another claim" if status == Status.SENDING.value else status
    log.warning(
        "message %s: stale write%s not applied: the row is %s",
        row.id,
        f" (-> {new.value})" if new else "",
        now,
        extra={"message_id": row.id, "provider": row.provider, "status": status},
    )
    record_event(
        s,
        row.id,
        source=source,
        kind="status",
        provider=row.provider,
        provider_message_id=row.provider_message_id,
        old=status,
        new=new,
        applied=False,
        note=f"not applied: this worker's claim was settled meanwhile (the row is {now})",
        raw=raw,
    )


def _status_now(s: Session, message_id: str) -> str:
    """The stored status of a row, read without touching its copies in the session."""
    found = s.connection().execute(select(Message.status).where(Message.id == message_id))
    return found.scalar() or "gone"


def move(
    s: Session,
    row: Message,
    new: Status,
    *,
    source: str,
    raw: Any = None,
    note: str | None = None,
    only_from: frozenset[Status] | None = None,
    **fields: Any,
) -> bool:
    """Move `row` to `new` if the state machine allows it; record the event either way.

    `fields` are other columns to set in the same UPDATE. `only_from`: the statuses
    this change is meant for (a cancel: scheduled or queued); if another process
    moved the row elsewhere first, nothing is applied. A row under `fence` must still
    be `sending` under its writer's claim. Returns True when applied. The caller commits.
    """
    old = Status(row.status)
    is_fenced, token = fenced(s, row.id)
    if is_fenced and (old is not Status.SENDING or row.claim_token != token):
        stale_write(s, row, new, source, raw)
        return False
    if only_from is not None and old not in only_from:
        return False
    if not can_move(old, new):
        record_event(
            s,
            row.id,
            source=source,
            kind="report",
            provider=row.provider,
            provider_message_id=row.provider_message_id,
            old=old,
            new=new,
            applied=False,
            note=note or f"ignored: {old} -> {new} is not a forward move",
            raw=raw,
        )
        return False
    now = utcnow()
    values: dict[str, Any] = {"status": new.value, "updated_at": now, **fields}
    # On the session's connection: no autoflush per row, no ORM bookkeeping; the
    # events queued with `s.add` are flushed together at commit.
    params = {"_id": row.id, "_old": old.value, "_token": token, **_bound(values)}
    statement = _move_statement(tuple(sorted(values)), _fence_kind(is_fenced, token))
    result = s.connection().execute(statement, params)
    if result.rowcount != 1 and is_fenced:
        # No longer this claim's. The writer's copy is left as it is (not refreshed):
        # it may be the one the worker holds, whose token a retried write fences with.
        stale_write(s, row, new, source, raw, _status_now(s, row.id))
        return False
    if result.rowcount != 1:  # type: ignore[attr-defined]
        # Someone else moved it first: re-read and try once more from there.
        s.refresh(row)
        if Status(row.status) != old:
            return move(
                s, row, new, source=source, raw=raw, note=note, only_from=only_from, **fields
            )
        return False
    _applied(s, row, old, new, values, source, note, raw, is_fenced)
    count_status(s, row.provider, new.value, priority=row.priority)
    return True


def _fence_kind(is_fenced: bool, token: str | None) -> str:
    """How a write is fenced: not at all, by its claim token, or by a claim without one
    (`claim_token IS NULL`: a bound NULL would match nothing)."""
    if not is_fenced:
        return ""
    return "token" if token is not None else "null"


@functools.lru_cache(maxsize=512)
def _move_statement(keys: tuple[str, ...], fence_kind: str) -> Any:
    """The conditional UPDATE of one row setting `keys`, built once per kind of change:
    building it anew was a tenth of a send's CPU. Parameters: `_id`, `_old` (the status
    read), `_token` (the claim, when fenced by one) and `_<key>` for each value."""
    statement = update(Message).where(
        Message.id == bindparam("_id"),  # type: ignore[arg-type]
        Message.status == bindparam("_old"),  # type: ignore[arg-type]
    )
    if fence_kind == "token":
        statement = statement.where(Message.claim_token == bindparam("_token"))  # type: ignore[arg-type]
    elif fence_kind == "null":
        statement = statement.where(Message.claim_token.is_(None))  # type: ignore[union-attr]
    return statement.values(**{key: bindparam(f"_{key}") for key in keys})


def _bound(values: dict[str, Any]) -> dict[str, Any]:
    return {f"_{key}": value for key, value in values.items()}


def _applied(
    s: Session,
    row: Message,
    old: Status,
    new: Status,
    values: dict[str, Any],
    source: str,
    note: str | None,
    raw: Any,
    is_fenced: bool,
    *,
    logged: bool = True,
) -> None:
    """What follows an applied change, for `move` and `move_many` alike: the row's copy
    holds what the UPDATE wrote (nothing to flush), its fence is lifted, the app's
    notification and the event are queued, and it is logged (`logged`; a group move
    logs one line for the group: `_log_group`)."""
    for key, value in values.items():
        set_committed_value(row, key, value)
    if is_fenced:
        _unfence(s, row.id)
    if notify.wants_notification(row, old.value, new.value):
        notify.add_notification(s, row, old.value, new.value, values["updated_at"])
    record_event(
        s,
        row.id,
        source=source,
        kind="status",
        provider=row.provider,
        provider_message_id=row.provider_message_id,
        old=old,
        new=new,
        note=note,
        raw=raw,
    )
    if not logged:
        return
    log.info(
        "message %s %s -> %s",
        row.id,
        old.value,
        new.value,
        extra={
            "message_id": row.id,
            "provider": row.provider,
            "status": new.value,
            "attempt": row.attempts,
        },
    )


def load_rows(s: Session, ids: list[str]) -> list[Message]:
    """Fresh copies of `ids` in session `s`, in the order given (missing ones dropped)."""
    found = {m.id: m for m in s.exec(select(Message).where(Message.id.in_(ids)))}  # type: ignore[union-attr]
    return [found[i] for i in ids if i in found]


@dataclass
class Move:
    """One row's part of `move_many`: the other columns to set, and its event's payload."""

    row: Message
    fields: dict[str, Any] = field(default_factory=dict)
    raw: Any = None
    note: str | None = None


def move_many(s: Session, new: Status, moves: list[Move], *, source: str) -> int:
    """`move` for many rows at once: one executemany UPDATE per kind of change.

    Same rules as `move` (conditional on the status read, forward only, a `fence`
    kept, one event and notification per row); rows whose change is not a forward
    move, that are no longer their writer's, or that someone else moved meanwhile, go
    through `move` one by one. Returns how many rows moved.
    """
    groups: dict[tuple[str, tuple[str, ...], str], list[Move]] = {}
    for m in moves:
        is_fenced, token = fenced(s, m.row.id)
        stale = is_fenced and (m.row.status != Status.SENDING.value or m.row.claim_token != token)
        key = (
            "stale" if stale else m.row.status,
            tuple(sorted(m.fields)),
            _fence_kind(is_fenced, token),
        )
        groups.setdefault(key, []).append(m)
    moved = 0
    for (old_value, keys, fence_kind), group in groups.items():
        if old_value == "stale" or not can_move(Status(old_value), new) or len(group) == 1:
            moved += sum(
                move(s, m.row, new, source=source, raw=m.raw, note=m.note, **m.fields)
                for m in group
            )
            continue
        moved += _move_group(s, Status(old_value), new, keys, group, source, fence_kind)
    return moved


def _move_group(
    s: Session,
    old: Status,
    new: Status,
    keys: tuple[str, ...],
    group: list[Move],
    source: str,
    fence_kind: str = "",
) -> int:
    is_fenced = bool(fence_kind)
    now = utcnow()
    statement = _move_statement(tuple(sorted({"status", "updated_at", *keys})), fence_kind)
    params = [
        {
            "_id": m.row.id,
            "_old": old.value,
            "_status": new.value,
            "_updated_at": now,
            "_token": fenced(s, m.row.id)[1] if is_fenced else None,
            **{f"_{k}": m.fields[k] for k in keys},
        }
        for m in group
    ]
    result = s.connection().execute(statement, params)
    done = group
    if result.rowcount != len(group):  # type: ignore[attr-defined]
        # Some rows were moved by someone else first: ours carry our `updated_at`.
        ours = set(
            s.connection()
            .execute(
                select(Message.id).where(
                    Message.id.in_([m.row.id for m in group]),  # type: ignore[union-attr]
                    Message.status == new.value,
                    Message.updated_at == now,
                )
            )
            .scalars()
        )
        done = [m for m in group if m.row.id in ours]
        for m in group:
            if m.row.id not in ours:
                if not is_fenced:  # a fenced row is refused by `move` as it is
                    s.refresh(m.row)
                move(s, m.row, new, source=source, raw=m.raw, note=m.note, **m.fields)
    by_provider: dict[tuple[str, str], list[str]] = {}
    for m in done:
        values = {"status": new.value, "updated_at": now, **m.fields}
        _applied(s, m.row, old, new, values, source, m.note, m.raw, is_fenced, logged=False)
        by_provider.setdefault((m.row.provider, m.row.priority), []).append(m.row.id)
    for (provider, priority), ids in by_provider.items():
        count_status(s, provider, new.value, len(ids), priority=priority)
        _log_group(provider, old, new, ids)
    return len(done)


def _log_group(provider: str, old: Status, new: Status, ids: list[str]) -> None:
    """One line for the messages of a group move, every id on it: a line each made
    logging 5-6 % of the bulk path's samples holding the GIL (make profile)."""
    log.info(
        "%d messages via %s %s -> %s: %s",
        len(ids),
        provider,
        old.value,
        new.value,
        " ".join(ids),
        extra={"message_ids": ids, "provider": provider, "status": new.value},
    )


def claim_many(
    s: Session, ids: list[str], now: datetime, token: str | None = None, *, retake: bool = False
) -> list[Message]:
    """`queued -> sending` for the rows of `ids` still queued, in one UPDATE, under the
    claim `token`; the rows claimed, in the order of `ids`, as the UPDATE returned them
    (a row another task has is left out). See `claim`.

    `retake`: also the rows already `sending` under `token`, when an earlier try of this
    claim may have committed without the worker hearing so (the store failed between
    the commit and its answer); they are not counted or recorded a second time.
    """
    if not ids:
        return []
    taken_again = _own_claims(s, ids, token) if retake and token else {}
    wanted = [i for i in ids if i not in taken_again]
    claimed = _claim_queued(s, wanted, now, token) if wanted else {}
    found = claimed | taken_again
    return [found[i] for i in ids if i in found]


def _own_claims(s: Session, ids: list[str], token: str) -> dict[str, Message]:
    """The rows of `ids` this claim already holds."""
    query = select(Message).where(
        Message.id.in_(ids),  # type: ignore[union-attr]
        Message.status == Status.SENDING.value,
        Message.claim_token == token,
    )
    return {row.id: row for row in s.exec(query)}


def _claim_queued(
    s: Session, ids: list[str], now: datetime, token: str | None
) -> dict[str, Message]:
    claimer = liveness.ensure_heartbeat()
    if len(ids) > 1 and s.get_bind().dialect.name == "postgresql":
        # Row locks first, in id order: one UPDATE locks its rows in the order its plan
        # meets them (heap order, which changes as rows are updated), so two claims of
        # overlapping batches could each hold a row the other waits for (a deadlock).
        # A claim of one row holds nothing while it waits for that row: no cycle can go
        # through it, and a single send saves the round trip.
        s.connection().execute(
            select(Message.id)
            .where(Message.id.in_(ids), Message.status == Status.QUEUED.value)  # type: ignore[union-attr]
            .order_by(Message.id)
            .with_for_update()
        )
    params = {"ids": ids, "now": now, "claimer": claimer, "token": token}
    found = s.scalars(_claim_statement(), params)
    claimed = {row.id: row for row in found}
    for message_id in ids:
        if message_id in claimed:
            record_event(
                s,
                message_id,
                source="worker",
                kind="status",
                old=Status.QUEUED.value,
                new=Status.SENDING.value,
                note="claimed for sending",
            )
    return claimed


@functools.cache
def _claim_statement() -> Any:
    """The claim's UPDATE, built once (building it was a tenth of a send's CPU).
    RETURNING the whole rows: no second read, and SQLite's write lock is held for this
    one UPDATE alone."""
    table = Message.__table__  # type: ignore[attr-defined]
    core = (
        update(table)
        .where(
            table.c.id.in_(bindparam("ids", expanding=True)),
            table.c.status == Status.QUEUED.value,
        )
        .values(
            status=Status.SENDING.value,
            claimed_at=bindparam("now"),
            claimed_by=bindparam("claimer"),
            claim_token=bindparam("token"),
            updated_at=bindparam("now"),
            attempts=table.c.attempts + 1,
        )
        .returning(*table.c)
    )
    return select(Message).from_statement(core)


def claim(s: Session, message_id: str, now: datetime) -> bool:
    """`queued -> sending` for one row, atomically; False if another task has it.

    The row keeps this process's claim id (`worker.resilience.liveness`), so if the process
    dies mid-send, beat settles the row soon after its heartbeat stops.
    """
    claimer = liveness.ensure_heartbeat()
    result = s.connection().execute(
        update(Message)
        .where(Message.id == message_id, Message.status == Status.QUEUED.value)  # type: ignore[arg-type]
        .values(
            status=Status.SENDING.value,
            claimed_at=now,
            claimed_by=claimer,
            updated_at=now,
            attempts=Message.attempts + 1,
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    record_event(
        s,
        message_id,
        source="worker",
        kind="status",
        old=Status.QUEUED.value,
        new=Status.SENDING.value,
        note="claimed for sending",
    )
    return True
