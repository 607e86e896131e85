"""Apply delivery reports pushed by gateways (PUSH mode) through the state machine."""

from __future__ import annotations

from sqlmodel import select

from producer import db
from producer.models import Message
from producer.status import Status
from worker.providers.base import StatusReport
from worker.transitions import move, record_event


def apply_push(provider: str, reports: list[StatusReport]) -> dict[str, int]:
    """Store every report; move the messages it names. Unknown ids are recorded, not errors."""
    counts = {"applied": 0, "ignored": 0, "unknown": 0}
    with db.session() as s:
        for report in reports:
            row = s.exec(
                select(Message).where(
                    Message.provider == provider,
                    Message.provider_message_id == report.provider_message_id,
                )
            ).first()
            if row is None and report.ref:
                row = s.get(Message, report.ref)
            if row is None:
                record_event(
                    s,
                    None,
                    source="push",
                    kind="report",
                    provider=provider,
                    provider_message_id=report.provider_message_id,
                    applied=False,
                    note=f"unknown message id ({report.raw_status})",
                    raw=report.raw,
                )
                counts["unknown"] += 1
                continue
            if report.status is None or report.status == Status.SENT:
                record_event(
                    s,
                    row.id,
                    source="push",
                    kind="report",
                    provider=provider,
                    provider_message_id=report.provider_message_id,
                    applied=False,
                    note=f"pending ({report.raw_status})",
                    raw=report.raw,
                )
                counts["ignored"] += 1
                continue
            if move(
                s,
                row,
                report.status,
                source="push",
                raw=report.raw,
                note=f"raw status {report.raw_status}",
                next_poll_at=None,
            ):
                counts["applied"] += 1
            else:
                counts["ignored"] += 1
        s.commit()
    return counts
