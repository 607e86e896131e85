"""Apply delivery reports pushed by gateways (PUSH mode) through the state machine.

A push changes a message only once smsq has handed it to that gateway; one
naming a queued or scheduled message is kept as an event and changes nothing.
Pushes that match no message are kept (a fast gateway may push before the
send's answer is stored) but bounded: at most UNKNOWN_REPORTS_MAX, for 24 h.
"""

from __future__ import annotations

import functools
import json
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func
from sqlmodel import Session, select

from producer import db
from producer.limits import limits_for
from producer.models import Message, MessageEvent, utcnow
from producer.settings import provider_settings
from producer.status import Status
from worker.gateways.base import StatusReport
from worker.store.transitions import record_event
from worker.tracking.reports import apply_report

log = logging.getLogger("smsq.dlr")


UNKNOWN_REPORT_TTL = timedelta(hours=24)  # an unmatched push is kept this long, then expired
UNKNOWN_REPORTS_MAX = 10_000  # and at most this many are kept; further ones are dropped
_NOT_HANDED = frozenset({Status.QUEUED.value, Status.SCHEDULED.value})


def push_verdict(status: str, stored_id: str | None, reported_id: str | None) -> str:
    """What a pushed report may do to a message smsq has (a pure rule):

    - `apply`: smsq has handed the message to the gateway (sent or later);
    - `not_handed`: it is still queued or scheduled: kept as an event, changes nothing;
    - `in_flight`: it is being sent: kept unmatched, applied once the gateway's id
      is stored (adopt_early_reports), like a report that beat the send's answer;
    - `other_id`: matched by smsq's reference, but the gateway's id differs.
    """
    if status in _NOT_HANDED:
        return "not_handed"
    if status == Status.SENDING.value:
        return "in_flight"
    if stored_id and reported_id and stored_id != reported_id:
        return "other_id"
    return "apply"


def _match(s: Session, provider: str, report: StatusReport) -> Message | None:
    """The message by the gateway's id, else by smsq's reference the gateway echoed."""
    row = s.exec(
        select(Message).where(
            Message.provider == provider,
            Message.provider_message_id == report.provider_message_id,
        )
    ).first()
    if row is None and report.ref:
        row = s.get(Message, report.ref)
    return row if row is not None and row.provider == provider else None


def apply_push(provider: str, reports: list[StatusReport]) -> dict[str, int]:
    """Store every report; move the messages it names once they were handed to this
    gateway. Unknown ids are kept (bounded, for 24 h), not errors."""
    counts = {"applied": 0, "ignored": 0, "unknown": 0}
    with db.session() as s:
        room = UNKNOWN_REPORTS_MAX - _unmatched_count(s)
        for report in reports:
            row = _match(s, provider, report)
            verdict = (
                "unknown"
                if row is None
                else push_verdict(row.status, row.provider_message_id, report.provider_message_id)
            )
            if verdict in ("unknown", "in_flight"):
                if room <= 0:
                    counts["dropped"] = counts.get("dropped", 0) + 1
                    continue
                room -= 1
                note = "unknown message id" if row is None else "message still being sent"
                _keep_unmatched(s, provider, report, note)
                counts["unknown"] += 1
            elif verdict == "apply":
                assert row is not None
                counts["applied" if apply_report(s, row, report, "push") else "ignored"] += 1
            else:
                assert row is not None
                _keep_refused(s, row, report, verdict)
                counts["ignored"] += 1
        s.commit()
    if counts.get("dropped"):
        log.warning(
            "dropped %d unmatched %s report(s): %d kept already",
            counts["dropped"],
            provider,
            UNKNOWN_REPORTS_MAX,
        )
    return counts


def _unmatched_count(s: Session) -> int:
    return s.exec(
        select(func.count())
        .select_from(MessageEvent)
        .where(MessageEvent.message_id.is_(None), MessageEvent.source == "push")  # type: ignore[union-attr]
    ).one()


def _keep_unmatched(s: Session, provider: str, report: StatusReport, why: str) -> None:
    record_event(
        s,
        None,
        source="push",
        kind="report",
        provider=provider,
        provider_message_id=report.provider_message_id,
        new=report.status.value if report.status else None,
        applied=False,
        note=f"{why} ({report.raw_status})",
        raw=report.raw,
    )


_REFUSED_NOTES = {
    "not_handed": "not applied: the message is {status}, not yet handed to the gateway",
    "other_id": "not applied: the gateway's id differs from the stored {stored}",
}


def _keep_refused(s: Session, row: Message, report: StatusReport, verdict: str) -> None:
    note = _REFUSED_NOTES[verdict].format(status=row.status, stored=row.provider_message_id)
    record_event(
        s,
        row.id,
        source="push",
        kind="report",
        provider=row.provider,
        provider_message_id=report.provider_message_id,
        new=report.status.value if report.status else None,
        applied=False,
        note=f"{note} ({report.raw_status})",
        raw=report.raw,
    )


def expire_unmatched_reports(now: datetime | None = None) -> int:
    """Beat: forget unmatched pushes older than UNKNOWN_REPORT_TTL."""
    cutoff = (now or utcnow()) - UNKNOWN_REPORT_TTL
    with db.session() as s:
        done = s.execute(
            delete(MessageEvent).where(
                MessageEvent.message_id.is_(None),  # type: ignore[union-attr]
                MessageEvent.source == "push",  # type: ignore[arg-type]
                MessageEvent.created_at < cutoff,  # type: ignore[arg-type]
            )
        )
        s.commit()
        return done.rowcount or 0  # type: ignore[attr-defined]


def _may_push(provider: str) -> bool:
    return limits_for(provider).supports_push and provider_settings(provider).dlr_mode != "pull"


def adopt_early_reports(s: Session, row: Message) -> int:
    """Apply pushes that arrived before the send's answer was stored.

    A fast gateway can push the report before the worker has written the
    gateway id, so the push was kept as an unknown-id event. Once the id is
    stored, those events are claimed for the message and applied in order.
    """
    return adopt_early_reports_of(s, [row])


@functools.cache
def _early_reports_query() -> Any:
    """Pushes of `provider` for the gateway ids `ids` not matched to a message yet; built
    once (every send with an id asks it: ix_message_events_unmatched answers)."""
    return (
        select(MessageEvent)
        .where(
            MessageEvent.message_id.is_(None),  # type: ignore[union-attr]
            MessageEvent.provider == bindparam("provider"),
            MessageEvent.provider_message_id.in_(bindparam("ids", expanding=True)),  # type: ignore[union-attr]
            MessageEvent.source == "push",
        )
        .order_by(MessageEvent.id)  # type: ignore[arg-type]
    )


def adopt_early_reports_of(s: Session, rows: list[Message]) -> int:
    """`adopt_early_reports` for a batch's rows (one provider): one SELECT for all."""
    by_id = {
        r.provider_message_id: r for r in rows if r.provider_message_id and _may_push(r.provider)
    }
    if not by_id:
        return 0
    provider = next(iter(by_id.values())).provider
    params = {"provider": provider, "ids": list(by_id)}
    early = s.scalars(_early_reports_query(), params).all()
    for event in early:
        row = by_id[event.provider_message_id]
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
