"""Apply delivery reports pushed by gateways (PUSH mode) through the state machine."""

from __future__ import annotations

import json

from sqlmodel import Session, select

from producer import db
from producer.limits import limits_for
from producer.models import Message, MessageEvent
from producer.settings import provider_settings
from producer.status import Status
from worker.gateways.base import StatusReport
from worker.store.transitions import record_event
from worker.tracking.reports import apply_report


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
                if row is not None and row.provider != provider:
                    row = None
            if row is None:
                record_event(
                    s,
                    None,
                    source="push",
                    kind="report",
                    provider=provider,
                    provider_message_id=report.provider_message_id,
                    new=report.status.value if report.status else None,
                    applied=False,
                    note=f"unknown message id ({report.raw_status})",
                    raw=report.raw,
                )
                counts["unknown"] += 1
                continue
            if apply_report(s, row, report, "push"):
                counts["applied"] += 1
            else:
                counts["ignored"] += 1
        s.commit()
    return counts


def _may_push(provider: str) -> bool:
    return limits_for(provider).supports_push and provider_settings(provider).dlr_mode != "pull"


def adopt_early_reports(s: Session, row: Message) -> int:
    """Apply pushes that arrived before the send's answer was stored.

    A fast gateway can push the report before the worker has written the
    gateway id, so the push was kept as an unknown-id event. Once the id is
    stored, those events are claimed for the message and applied in order.
    """
    if not row.provider_message_id or not _may_push(row.provider):
        return 0
    early = s.exec(
        select(MessageEvent)
        .where(
            MessageEvent.message_id.is_(None),  # type: ignore[union-attr]
            MessageEvent.provider == row.provider,
            MessageEvent.provider_message_id == row.provider_message_id,
            MessageEvent.source == "push",
        )
        .order_by(MessageEvent.id)  # type: ignore[arg-type]
    ).all()
    for event in early:
        event.message_id = row.id
        event.note = (event.note or "") + "; matched once the send was stored"
        s.add(event)
        report = StatusReport(
            provider_message_id=row.provider_message_id,
            status=Status(event.new_status) if event.new_status else None,
            raw_status="pushed early",  # the gateway's own words stay in the event's raw
            raw=json.loads(event.raw) if event.raw else None,
        )
        apply_report(s, row, report, "push")
    return len(early)
