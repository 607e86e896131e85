"""Status callbacks to the application: POST each status change to `callback_url`.

An outbox: `move()` writes an `AppNotification` row in the same transaction as
the status change, so no change is lost to a crash. Right after the commit its
id is published to the `smsq.notify_app` task; if the broker is down then,
beat's tick picks it up. The POST runs on the `callbacks` queue of its own (a
slow application never holds up sends or polls), with its own timeout, and is
retried with exponential backoff (honouring `Retry-After`) up to
SMSQ_APP_CALLBACK_MAX_ATTEMPTS. The POST goes to the
address the worker checked just before (worker.edge.pinned): a host that has
come to resolve inside since the URL was accepted is refused, not retried.

Delivery is at least once (a worker killed mid-POST posts again), so each body
carries `event_id` for the application to drop duplicates; the notifications
of one message are posted in order, an earlier one first.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import ColumnElement, event, literal_column, update
from sqlmodel import Session, select

from producer import db
from producer.models import AppNotification, Message, utcnow
from producer.settings import get_settings
from producer.signing import signed_headers
from producer.status import Status
from worker.edge.pinned import CallbackRefused, PinnedTransport
from worker.gateways.base import parse_retry_after
from worker.ops import metrics
from worker.resilience.backoff import delay

log = logging.getLogger("smsq.notify")

PENDING, POSTING, DELIVERED, FAILED = "pending", "posting", "delivered", "failed"
LEASE_SECONDS = 60.0  # a published notification not posted by then is queued again
TASK_BUDGET_SECONDS = 30.0  # one task posts for at most this long, then leaves the rest
BATCH = 20  # notifications per task queued by beat
BACKOFF_BASE, BACKOFF_CAP = 2.0, 600.0
_SESSION_KEY = "smsq_new_notifications"

# Internal churn the application does not need: claiming a row for sending and
# handing it back to the queue between attempts.
_QUIET: frozenset[tuple[str, str]] = frozenset(
    {(Status.QUEUED.value, Status.SENDING.value), (Status.SENDING.value, Status.QUEUED.value)}
)

Publisher = Callable[[Sequence[int]], None]


def wants_notification(row: Message, old: str, new: str) -> bool:
    return bool(row.callback_url) and (old, new) not in _QUIET


def payload(row: Message, old: str, new: str, at: datetime) -> dict[str, Any]:
    """The JSON body: what changed, when, and why (no secrets, no message text)."""
    return {
        "id": row.id,
        "status": new,
        "previous_status": old,
        "provider": row.provider,
        "provider_message_id": row.provider_message_id,
        "error": row.error,
        "attempts": row.attempts,
        "time": at.isoformat(),
    }


def add_notification(s: Session, row: Message, old: str, new: str, at: datetime) -> None:
    """Store the notification in `s` (the caller's transaction); published after commit."""
    note = AppNotification(
        message_id=row.id,
        provider=row.provider,
        url=row.callback_url or "",
        payload=json.dumps(payload(row, old, new, at)),
        next_attempt_at=at + timedelta(seconds=LEASE_SECONDS),
    )
    s.add(note)
    s.info.setdefault(_SESSION_KEY, []).append(note)


@event.listens_for(Session, "before_commit")
def _collect_ids(s: Session) -> None:
    pending = s.info.get(_SESSION_KEY)
    if pending:
        s.flush()
        s.info["smsq_notification_ids"] = [n.id for n in pending if n.id is not None]
        s.info[_SESSION_KEY] = []


@event.listens_for(Session, "after_commit")
def _publish_after_commit(s: Session) -> None:
    ids = s.info.pop("smsq_notification_ids", None)
    if ids:
        try:
            publish(ids)
        except Exception:  # broker down: beat's tick queues them when the lease ends
            log.warning("could not queue %d app notification(s); beat will", len(ids))


@event.listens_for(Session, "after_rollback")
def _forget(s: Session) -> None:
    s.info.pop(_SESSION_KEY, None)
    s.info.pop("smsq_notification_ids", None)


def publish(ids: Sequence[int]) -> None:
    from producer.enqueue import publish_notify

    publish_notify(list(ids))


def backoff(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before the next POST: jittered doubling, or the app's `Retry-After`."""
    return delay(
        attempts,
        base=BACKOFF_BASE,
        cap=BACKOFF_CAP,
        retry_after=retry_after,
        retry_after_bounds=(0.0, BACKOFF_CAP * 6),
    )


_warned_unsigned = False


def signature_headers(body: bytes) -> dict[str, str]:
    """X-Smsq-Timestamp and X-Smsq-Signature under SMSQ_APP_CALLBACK_SECRET (never the
    delivery-report secret); none, with one warning per process, when it is unset."""
    global _warned_unsigned
    secret = get_settings().app_callback_secret
    if secret is None or not secret.get_secret_value():
        if not _warned_unsigned:
            _warned_unsigned = True
            log.warning("SMSQ_APP_CALLBACK_SECRET is unset: status callbacks to apps go unsigned")
        return {}
    return signed_headers(body, secret.get_secret_value())


def deliver(ids: Sequence[int], client: httpx.Client | None = None) -> dict[str, int]:
    """Post the notifications `ids` (and any earlier pending ones of the same messages).

    One unreachable application must not hold a worker thread for long: after
    a timeout or connection error its host is skipped for the rest of this
    run, and the run stops after TASK_BUDGET_SECONDS. Whatever is skipped stays
    pending and beat queues it again when its lease ends.
    """
    counts = {DELIVERED: 0, PENDING: 0, FAILED: 0}
    with db.session() as s:
        message_ids = sorted(
            set(
                s.exec(
                    select(AppNotification.message_id).where(
                        AppNotification.id.in_(list(ids))  # type: ignore[union-attr]
                    )
                ).all()
            )
        )
    own = client is None
    client = client or callback_client()
    run = _Run(deadline=time.monotonic() + TASK_BUDGET_SECONDS)
    try:
        for message_id in message_ids:
            if time.monotonic() > run.deadline:
                break
            _deliver_message(message_id, client, counts, run)
    finally:
        if own:
            client.close()
    return counts


def callback_client() -> httpx.Client:
    """No redirects, no proxies from the environment, each address checked and pinned."""
    settings = get_settings()
    return httpx.Client(
        transport=PinnedTransport(allow_private=settings.callback_allow_private),
        timeout=settings.app_callback_timeout_seconds,
        follow_redirects=False,
        trust_env=False,
    )


@dataclass
class _Run:
    deadline: float
    down_hosts: set[str] = field(default_factory=set)


def _deliver_message(
    message_id: str, client: httpx.Client, counts: dict[str, int], run: _Run
) -> None:
    """Post one message's pending notifications in order; stop at the first not delivered."""
    with db.session() as s:
        queue = s.exec(
            select(AppNotification)
            .where(AppNotification.message_id == message_id, AppNotification.state == PENDING)
            .order_by(AppNotification.id)  # type: ignore[arg-type]
        ).all()
    for note in queue:
        host = urlsplit(note.url).netloc
        if host in run.down_hosts:
            return  # its application is not answering: later, by beat
        if not _claim(note):
            return  # another task has it; it keeps the order from here
        state, unreachable = _post(note, client)
        counts[state] += 1
        if unreachable:
            run.down_hosts.add(host)
        if state != DELIVERED:
            _hold_back_later(note)
            return


def _claim(note: AppNotification) -> bool:
    with db.session() as s:
        done = s.execute(
            update(AppNotification)
            .where(AppNotification.id == note.id, AppNotification.state == PENDING)  # type: ignore[arg-type]
            .values(state=POSTING, updated_at=utcnow())
        )
        s.commit()
        return done.rowcount == 1  # type: ignore[attr-defined]


def _post(note: AppNotification, client: httpx.Client) -> tuple[str, bool]:
    """POST one notification; (its new state, whether the host was unreachable)."""
    headers = {"Content-Type": "application/json", "User-Agent": "smsq"}
    body_with_id = json.loads(note.payload)
    body_with_id["event_id"] = note.id
    body = json.dumps(body_with_id).encode()
    headers.update(signature_headers(body))
    retry_after: float | None = None
    error: str | None = None
    permanent = unreachable = False
    try:
        answer = client.post(note.url, content=body, headers=headers)
        if 200 <= answer.status_code < 300:
            return _finish(note, DELIVERED, None), False
        error = f"HTTP {answer.status_code}"
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        permanent = 400 <= answer.status_code < 500 and answer.status_code not in (408, 425, 429)
    except CallbackRefused as exc:  # the host now aims inside: never retried
        error, permanent = f"refused: {exc}", True
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}"
        unreachable = True
    attempts = note.attempts + 1
    if permanent or attempts >= get_settings().app_callback_max_attempts:
        log.warning(
            "app callback for %s given up after %d attempt(s): %s",
            note.message_id,
            attempts,
            error,
            extra={"message_id": note.message_id, "provider": note.provider},
        )
        return _finish(note, FAILED, error), unreachable
    delay = backoff(attempts, retry_after)
    return _finish(note, PENDING, error, next_at=utcnow() + timedelta(seconds=delay)), unreachable


def _finish(
    note: AppNotification, state: str, error: str | None, next_at: datetime | None = None
) -> str:
    with db.session() as s:
        s.execute(
            update(AppNotification)
            .where(AppNotification.id == note.id)  # type: ignore[arg-type]
            .values(
                state=state,
                attempts=AppNotification.attempts + 1,
                last_error=error,
                next_attempt_at=next_at,
                updated_at=utcnow(),
            )
        )
        s.commit()
    note.attempts += 1
    note.next_attempt_at = next_at
    metrics.APP_CALLBACKS.labels(note.provider or "", state).inc()
    return state


def _hold_back_later(note: AppNotification) -> None:
    """Later notifications of the message wait for this one (order is kept)."""
    if note.next_attempt_at is None:
        return
    with db.session() as s:
        s.execute(
            update(AppNotification)
            .where(
                AppNotification.message_id == note.message_id,  # type: ignore[arg-type]
                AppNotification.state == PENDING,  # type: ignore[arg-type]
                AppNotification.id > note.id,  # type: ignore[operator]
            )
            .values(next_attempt_at=note.next_attempt_at)
        )
        s.commit()


def _state_is(state: str) -> ColumnElement[bool]:
    """`state = '<state>'` written into the SQL: the partial indexes of the due queries
    are used only then (see `producer.models.status_sql`)."""
    assert state in (PENDING, POSTING, DELIVERED, FAILED)
    return AppNotification.__table__.c.state == literal_column(f"'{state}'")  # type: ignore[attr-defined,no-any-return]


def queue_due(queue: Publisher, limit: int = 5000) -> int:
    """Beat: queue pending notifications whose time has come; free stuck `posting` ones."""
    now = utcnow()
    with db.session() as s:
        s.execute(
            update(AppNotification)
            .where(
                _state_is(POSTING),
                AppNotification.updated_at < now - timedelta(seconds=LEASE_SECONDS * 2),  # type: ignore[operator]
            )
            .values(state=PENDING, next_attempt_at=now)
        )
        due = s.exec(
            select(AppNotification)
            .where(_state_is(PENDING), AppNotification.next_attempt_at <= now)  # type: ignore[operator]
            # The index's order: the earliest due first, read from the due index alone.
            .order_by(AppNotification.next_attempt_at, AppNotification.id)  # type: ignore[arg-type]
            .limit(limit)
        ).all()
        leased: list[int] = []
        for note in due:
            done = s.execute(
                update(AppNotification)
                .where(
                    AppNotification.id == note.id,  # type: ignore[arg-type]
                    AppNotification.state == PENDING,  # type: ignore[arg-type]
                    AppNotification.next_attempt_at == note.next_attempt_at,  # type: ignore[arg-type]
                )
                .values(next_attempt_at=now + timedelta(seconds=LEASE_SECONDS))
            )
            if done.rowcount == 1:  # type: ignore[attr-defined]
                leased.append(note.id)  # type: ignore[arg-type]
        s.commit()
    for start in range(0, len(leased), BATCH):
        try:
            queue(leased[start : start + BATCH])
        except Exception:
            log.warning("could not queue app notifications", exc_info=True)
    return len(leased)
