"""Apply one delivery report (polled or pushed) to one stored message.

Both PULL (`worker.tracking.polling`) and PUSH (`worker.tracking.dlr`) come through here, so a
report means the same whatever its road: a pending report is kept as an
event; a final one moves the message through the state machine (late,
duplicate and out-of-order ones are kept and change nothing); and a report
about one part of a long message counts only for that part: the message is
`delivered` when every part is, and takes a part's failure as soon as one
part fails (it can no longer arrive whole).
"""

from __future__ import annotations

import json

from sqlalchemy import update
from sqlmodel import Session

from producer.models import Message
from producer.status import Status, can_move
from worker.gateways.base import StatusReport
from worker.store.transitions import move, record_event

_FAILURE_ORDER = (Status.REJECTED, Status.UNDELIVERED, Status.EXPIRED, Status.FAILED)


def apply_report(s: Session, row: Message, report: StatusReport, source: str) -> bool:
    """Store `report` for `row`; return True when the message's status moved."""
    if report.part is not None and (report.parts or row.segments) > 1:
        return _apply_part(s, row, report, source)
    if report.status is None or report.status == Status.SENT:
        _keep(s, row, report, source, f"pending ({report.raw_status or 'no status'})")
        return False
    return move(
        s,
        row,
        report.status,
        source=source,
        raw=report.raw,
        note=f"raw status {report.raw_status}",
        next_poll_at=None,
    )


def part_states(row: Message) -> dict[int, Status]:
    """The stored state of each reported part of `row` (empty when none reported)."""
    if not row.part_status:
        return {}
    try:
        data = json.loads(row.part_status)
        return {int(k): Status(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def combined_status(states: dict[int, Status], parts: int) -> Status | None:
    """The message's status from its parts': a failure at once, delivered when all are."""
    for failure in _FAILURE_ORDER:
        if failure in states.values():
            return failure
    if parts > 0 and all(states.get(i) == Status.DELIVERED for i in range(1, parts + 1)):
        return Status.DELIVERED
    return None


def _apply_part(s: Session, row: Message, report: StatusReport, source: str) -> bool:
    parts = max(report.parts or 0, row.segments, report.part or 0)
    part = report.part or 1
    label = f"part {part}/{parts}"
    new = report.status
    if new is None or new == Status.SENT:
        _keep(s, row, report, source, f"{label} pending ({report.raw_status or 'no status'})")
        return False
    for _ in range(10):  # another report may write the parts first: re-read and redo
        before = row.part_status
        states = part_states(row)
        old = states.get(part, Status.SENT)
        if not can_move(old, new):
            _keep(s, row, report, source, f"{label}: ignored, {old} -> {new} is not forward")
            return False
        states[part] = new
        after = json.dumps({str(k): v.value for k, v in sorted(states.items())})
        same = Message.part_status.is_(None) if before is None else Message.part_status == before  # type: ignore[union-attr]
        done = s.execute(
            update(Message).where(Message.id == row.id, same).values(part_status=after)  # type: ignore[arg-type]
        )
        if done.rowcount == 1:  # type: ignore[attr-defined]
            row.part_status = after
            break
        s.refresh(row)
    else:
        _keep(s, row, report, source, f"{label}: not stored, the parts kept changing")
        return False
    whole = combined_status(states, parts)
    if whole is None:
        delivered = sum(1 for v in states.values() if v == Status.DELIVERED)
        note = f"{label} {new.value} ({delivered}/{parts} parts delivered; waiting for the rest)"
        _keep(s, row, report, source, note, applied=True)
        return False
    return move(
        s,
        row,
        whole,
        source=source,
        raw=report.raw,
        note=f"{label} {new.value} (raw status {report.raw_status}); whole message {whole.value}",
        next_poll_at=None,
    )


def _keep(
    s: Session,
    row: Message,
    report: StatusReport,
    source: str,
    note: str,
    applied: bool = False,
) -> None:
    record_event(
        s,
        row.id,
        source=source,
        kind="report",
        provider=row.provider,
        provider_message_id=report.provider_message_id,
        new=report.status.value if report.status else None,
        applied=applied,
        note=note,
        raw=report.raw,
    )
