"""PULL delivery tracking: ask the gateway for the status of sent messages when due.

`next_poll_at` lives in the store; beat's tick leases the due rows and queues
poll tasks in batches the gateway accepts (SMSClub: 100 ids a request).
After the last delay of SMSQ_POLL_SCHEDULE the message stays `sent`, with a
note: no report is not a failure. Polls whose request failed do not count
against the schedule (see `_apply`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial

from sqlmodel import select

from producer import db
from producer.models import Message, utcnow
from producer.settings import get_settings, provider_settings
from producer.status import Status, is_terminal
from worker.gateways.base import PermanentProviderError, RetryableProviderError, StatusReport
from worker.gateways.registry import get_adapter
from worker.ops import metrics
from worker.resilience.backoff import ceiling
from worker.store import retry as store_retry
from worker.store.transitions import load_rows
from worker.tracking.reports import apply_report

log = logging.getLogger("smsq.polling")

POLL_RETRY_CAP = 600.0  # seconds between polls that keep failing
POLL_GIVE_UP = timedelta(hours=48)  # failed polls stop this long after the send
POLL_STORE_RETRY_SECONDS = 60.0  # a poll waits this long for the store to come back


def first_poll_at(provider: str, sent_at: datetime) -> datetime | None:
    """When to ask first about a message just sent, by the provider's DLR mode.

    `pull`: after the schedule's first delay. `push`: never (the gateway calls
    us). `both`: only if no push has come within SMSQ_PUSH_GRACE_SECONDS; then
    the schedule runs as in `pull`.
    """
    settings = get_settings()
    mode = provider_settings(provider).dlr_mode
    if mode == "push":
        return None
    if mode == "both":
        return sent_at + timedelta(seconds=settings.push_grace_seconds)
    return sent_at + timedelta(seconds=settings.poll_delays[0])


def poll_messages(provider: str, ids: Sequence[str]) -> int:
    """Poll the status of `ids`; return how many changed status. The store being down a
    while delays the poll rather than dropping it (its lease would hold it 2 minutes)."""
    rows = store_retry.durably(
        "reading rows to poll", partial(_pollable, provider, ids), POLL_STORE_RETRY_SECONDS
    )
    if not rows:
        return 0
    adapter = get_adapter(provider)
    reports: list[StatusReport] = []
    failed: dict[str, str] = {}  # row id -> why its poll failed
    size = max(1, adapter.max_status_batch)
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        try:
            reports.extend(adapter.fetch_status([r.provider_message_id or "" for r in chunk]))
            metrics.POLLS.labels(provider).inc()
        except (RetryableProviderError, PermanentProviderError) as exc:
            log.warning("status poll via %s failed: %s", provider, exc)
            failed.update({r.id: str(exc) for r in chunk})
    return store_retry.durably(
        "storing poll results", partial(_apply, rows, reports, failed), POLL_STORE_RETRY_SECONDS
    )


def _pollable(provider: str, ids: Sequence[str]) -> list[Message]:
    with db.session() as s:
        return list(
            s.exec(
                select(Message).where(
                    Message.id.in_(list(ids)),  # type: ignore[union-attr]
                    Message.provider == provider,
                    Message.status == Status.SENT.value,
                    Message.provider_message_id.is_not(None),  # type: ignore[union-attr]
                )
            )
        )


def failed_poll_delay(failures: int) -> float:
    """Backoff for a poll whose request failed: 5 s doubling up to POLL_RETRY_CAP."""
    return ceiling(failures, 5.0, POLL_RETRY_CAP)


def _apply(rows: list[Message], reports: list[StatusReport], failed: dict[str, str]) -> int:
    """Apply what the gateway said; schedule each row's next poll.

    An answered poll takes the next step of SMSQ_POLL_SCHEDULE; after the last
    one the row stays `sent` with a note. A failed poll (gateway down, an auth
    error being fixed) is not a step: it is asked again with backoff, until
    POLL_GIVE_UP after the send, so a status outage does not use the schedule up.
    """
    delays = get_settings().poll_delays
    by_pid: dict[str, list[StatusReport]] = {}
    for report in reports:
        by_pid.setdefault(report.provider_message_id, []).append(report)
    changed = 0
    now = utcnow()
    with db.session() as s:
        for row in load_rows(s, [r.id for r in rows]):
            for report in by_pid.get(row.provider_message_id or "", []):
                if apply_report(s, row, report, "poll"):
                    changed += 1
            if is_terminal(row.status):
                continue
            error = failed.get(row.id)
            if error is not None:
                _schedule_after_failure(row, error, now)
            else:
                _schedule_next_step(row, delays, now)
            row.updated_at = now
            s.add(row)
        s.commit()
    return changed


def _schedule_next_step(row: Message, delays: list[float], now: datetime) -> None:
    count = row.poll_count + 1
    if count >= len(delays):
        row.next_poll_at = None
        row.note = f"no final status after {count} polls over {sum(delays):.0f}s; left sent"
    else:
        row.next_poll_at = now + timedelta(seconds=delays[count])
    row.poll_count = count
    if row.poll_failures and row.note and row.note.startswith("status poll failed"):
        row.note = None
    row.poll_failures = 0


def _schedule_after_failure(row: Message, error: str, now: datetime) -> None:
    failures = row.poll_failures + 1
    row.poll_failures = failures
    sent_at = row.sent_at or row.created_at
    if now - sent_at >= POLL_GIVE_UP:
        row.next_poll_at = None
        row.note = (
            f"no final status: status polls failed {failures} time(s) in a row until "
            f"{POLL_GIVE_UP.total_seconds() / 3600:.0f} h after the send; left sent "
            f"(last error: {error})"
        )
        return
    row.next_poll_at = now + timedelta(seconds=failed_poll_delay(failures))
    row.note = f"status poll failed {failures} time(s) in a row, asked again: {error}"
