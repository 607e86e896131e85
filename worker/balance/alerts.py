"""Balance alerts in the store: shared firing state, history, and a delivery outbox.

Every process and host shares one `AlertState` row per (provider, kind).
Raising an alert is the conditional update `firing: false -> true`; the
process whose update changed the row writes the `Alert` and one
`AlertDelivery` per channel in the same transaction, so two beats on two hosts
never both raise it, and a crash never loses it. Re-arming is the reverse
conditional update.

Deliveries are an outbox: tried right after the check, then retried with
backoff (2 s doubling to 5 min, `Retry-After` honoured) by the
`smsq.deliver_alerts` task, which re-queues itself with a countdown of at
most 60 s while anything is pending, and by every later balance check. A row
is claimed by moving its `next_attempt_at` (a lease), so two workers never
post one twice at the same time; after 24 hours it is given up (`failed`).
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from producer import db
from producer.models import Alert, AlertDelivery, AlertState, utcnow
from producer.queues import MAX_COUNTDOWN
from producer.settings import Settings, get_settings
from worker.balance import channels as alert_channels
from worker.balance.channels import EMAIL, WEBHOOK, ChannelError
from worker.balance.rules import KINDS
from worker.resilience.backoff import delay

log = logging.getLogger("smsq.alerts")

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
LEASE = timedelta(seconds=120)  # a claimed delivery not finished by then is tried again
BACKOFF_BASE, BACKOFF_CAP = 2.0, 300.0
GIVE_UP_AFTER = timedelta(hours=24)
RETRY_KEY = "smsq:alerts:retry-scheduled"


# -- shared state ------------------------------------------------------------------
def _ensure_states(s: Session, provider: str) -> None:
    """Create the provider's state rows if missing; a concurrent insert is harmless."""
    rows = [
        {"provider": provider, "kind": k, "firing": False, "updated_at": utcnow()} for k in KINDS
    ]
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        s.execute(postgresql.insert(AlertState).values(rows).on_conflict_do_nothing())
    elif dialect == "sqlite":
        s.execute(sqlite.insert(AlertState).values(rows).on_conflict_do_nothing())
    else:  # pragma: no cover - the store is SQLite or PostgreSQL
        have = set(s.exec(select(AlertState.kind).where(AlertState.provider == provider)).all())
        s.add_all(AlertState(**r) for r in rows if r["kind"] not in have)


def firing(provider: str) -> dict[str, bool]:
    """Which kinds are firing for `provider` (missing rows: not firing)."""
    with db.session() as s:
        rows = s.exec(select(AlertState).where(AlertState.provider == provider)).all()
    found = {r.kind: r.firing for r in rows}
    return {k: found.get(k, False) for k in KINDS}


def channels(settings: Settings | None = None) -> list[str]:
    """The outbox channels configured now (the log always gets the alert too)."""
    settings = settings or get_settings()
    return [c for c in (WEBHOOK, EMAIL) if alert_channels.configured(c, settings)]


def raise_alert(
    provider: str, kind: str, payload: dict[str, Any], now: datetime | None = None
) -> int | None:
    """Fire `kind` for `provider` unless it is already firing; the new alert's id or None.

    The conditional update, the alert row and its outbox rows commit together.
    """
    now = now or utcnow()
    with db.session() as s:
        _ensure_states(s, provider)
        won = s.execute(
            update(AlertState)
            .where(
                col(AlertState.provider) == provider,
                col(AlertState.kind) == kind,
                col(AlertState.firing).is_(False),
            )
            .values(firing=True, fired_at=now, updated_at=now)
        )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            s.rollback()
            return None
        alert = Alert(
            provider=provider, kind=kind, message=payload["message"], payload="{}", created_at=now
        )
        s.add(alert)
        s.flush()
        alert.payload = json.dumps({**payload, "alert_id": alert.id, "at": now.isoformat()})
        s.execute(
            update(AlertState)
            .where(col(AlertState.provider) == provider, col(AlertState.kind) == kind)
            .values(last_alert_id=alert.id)
        )
        for channel in channels():
            s.add(AlertDelivery(alert_id=alert.id, channel=channel, next_attempt_at=now))
        s.commit()
    log.warning("balance alert %s: %s", kind, payload["message"], extra={"provider": provider})
    return alert.id


def rearm(provider: str, kind: str, now: datetime | None = None) -> bool:
    """Re-arm a firing alert (its condition cleared); True when this call did it."""
    now = now or utcnow()
    with db.session() as s:
        done = s.execute(
            update(AlertState)
            .where(
                col(AlertState.provider) == provider,
                col(AlertState.kind) == kind,
                col(AlertState.firing).is_(True),
            )
            .values(firing=False, cleared_at=now, updated_at=now)
        )
        s.commit()
    if done.rowcount == 1:  # type: ignore[attr-defined]
        log.info("balance alert %s cleared for %s", kind, provider, extra={"provider": provider})
        return True
    return False


# -- delivery ----------------------------------------------------------------------
def backoff(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before the next try: 2, 4, 8 ... 300; a `Retry-After` wins (up to an hour)."""
    return delay(
        attempts,
        base=BACKOFF_BASE,
        cap=BACKOFF_CAP,
        jitter=False,
        retry_after=retry_after,
        retry_after_bounds=(1.0, 3600.0),
    )


def deliver_due(now: datetime | None = None, settings: Settings | None = None) -> dict[str, int]:
    """Try every due pending delivery whose channel this process has configured."""
    now = now or utcnow()
    settings = settings or get_settings()
    counts = {DELIVERED: 0, PENDING: 0, FAILED: 0}
    with db.session() as s:
        due = s.exec(
            select(AlertDelivery, Alert)
            .join(Alert, col(Alert.id) == col(AlertDelivery.alert_id))
            .where(AlertDelivery.state == PENDING, col(AlertDelivery.next_attempt_at) <= now)
            .order_by(col(AlertDelivery.id))
        ).all()
    for delivery, alert in due:
        if now - delivery.created_at > GIVE_UP_AFTER:
            reason = f"given up after {GIVE_UP_AFTER}; last error: {delivery.last_error}"
            _finish(delivery, FAILED, reason, None, now, attempted=False)
            counts[FAILED] += 1
            continue
        if not alert_channels.configured(delivery.channel, settings) or not _claim(delivery, now):
            continue  # another process's settings, or another worker has it now
        counts[_attempt(delivery, alert, settings, now)] += 1
    return counts


def _claim(delivery: AlertDelivery, now: datetime) -> bool:
    with db.session() as s:
        done = s.execute(
            update(AlertDelivery)
            .where(
                col(AlertDelivery.id) == delivery.id,
                col(AlertDelivery.state) == PENDING,
                col(AlertDelivery.next_attempt_at) == delivery.next_attempt_at,
            )
            .values(next_attempt_at=now + LEASE, updated_at=now)
        )
        s.commit()
    return done.rowcount == 1  # type: ignore[attr-defined]


def _attempt(delivery: AlertDelivery, alert: Alert, settings: Settings, now: datetime) -> str:
    payload = json.loads(alert.payload)
    try:
        alert_channels.SENDERS[delivery.channel](payload, settings)
    except ChannelError as exc:
        delay = backoff(delivery.attempts + 1, exc.retry_after)
        log.warning(
            "balance alert %d via %s not delivered (%s); retry in %.0f s",
            alert.id,
            delivery.channel,
            exc,
            delay,
            extra={"provider": alert.provider},
        )
        return _finish(delivery, PENDING, str(exc), now + timedelta(seconds=delay), now)
    except Exception as exc:  # a bug or an odd library error must not lose the alert
        delay = backoff(delivery.attempts + 1)
        reason = f"{delivery.channel}: {type(exc).__name__}"
        log.warning("balance alert %d: %s", alert.id, reason, extra={"provider": alert.provider})
        return _finish(delivery, PENDING, reason, now + timedelta(seconds=delay), now)
    log.info("balance alert %d delivered via %s", alert.id, delivery.channel)
    return _finish(delivery, DELIVERED, None, None, now)


def _finish(
    delivery: AlertDelivery,
    state: str,
    error: str | None,
    next_at: datetime | None,
    now: datetime,
    attempted: bool = True,
) -> str:
    with db.session() as s:
        s.execute(
            update(AlertDelivery)
            .where(col(AlertDelivery.id) == delivery.id)
            .values(
                state=state,
                attempts=AlertDelivery.attempts + (1 if attempted else 0),
                last_error=error,
                next_attempt_at=next_at,
                updated_at=now,
            )
        )
        s.commit()
    return state


def next_due(settings: Settings | None = None) -> datetime | None:
    """When the soonest pending delivery this process can make is due, or None."""
    settings = settings or get_settings()
    mine = [c for c in (WEBHOOK, EMAIL) if alert_channels.configured(c, settings)]
    if not mine:
        return None
    with db.session() as s:
        return s.exec(
            select(AlertDelivery.next_attempt_at)
            .where(AlertDelivery.state == PENDING, col(AlertDelivery.channel).in_(mine))
            .order_by(col(AlertDelivery.next_attempt_at))
            .limit(1)
        ).first()


def schedule_retry(now: datetime | None = None) -> float | None:
    """Queue `smsq.deliver_alerts` (countdown <= 60 s) when deliveries are pending.

    A Redis key keeps it to one waiting task; without Redis it is queued anyway
    (a second task finds the rows claimed or delivered). Returns the countdown.
    """
    when = next_due()
    if when is None:
        return None
    delay = (when - (now or utcnow())).total_seconds()
    countdown = min(max(delay, 1.0), MAX_COUNTDOWN)
    try:
        from worker import redis_client

        if not redis_client.shared().set(RETRY_KEY, "1", nx=True, ex=math.ceil(countdown) + 30):
            return countdown  # a task is already waiting
    except Exception:
        log.debug("redis unavailable for the alert retry key", exc_info=True)
    try:
        from producer.enqueue import publish_alert_retry

        publish_alert_retry(countdown)
    except Exception:
        log.warning("could not queue the alert retry; the next balance check retries")
        return None
    return countdown


def retry_task() -> dict[str, int]:
    """Body of `smsq.deliver_alerts`: deliver what is due, queue the next try if needed."""
    try:
        from worker import redis_client

        redis_client.shared().delete(RETRY_KEY)
    except Exception:
        log.debug("redis unavailable for the alert retry key", exc_info=True)
    counts = deliver_due()
    schedule_retry()
    return counts


# -- history -------------------------------------------------------------------------
def _alert_dict(alert: Alert, deliveries: list[AlertDelivery]) -> dict[str, Any]:
    return {
        **json.loads(alert.payload),
        "id": alert.id,
        "created_at": alert.created_at.isoformat(),
        "deliveries": [
            {
                "channel": d.channel,
                "state": d.state,
                "attempts": d.attempts,
                "last_error": d.last_error,
            }
            for d in deliveries
        ],
    }


def history(limit: int = 50, provider: str | None = None) -> list[dict[str, Any]]:
    """The latest alerts, newest first, with the state of each channel's delivery."""
    with db.session() as s:
        query = select(Alert).order_by(col(Alert.id).desc()).limit(limit)
        if provider:
            query = query.where(Alert.provider == provider)
        alerts = s.exec(query).all()
        ids = [a.id for a in alerts]
        deliveries = s.exec(select(AlertDelivery).where(col(AlertDelivery.alert_id).in_(ids))).all()
    by_alert: dict[int, list[AlertDelivery]] = {}
    for d in deliveries:
        by_alert.setdefault(d.alert_id, []).append(d)
    return [_alert_dict(a, by_alert.get(a.id or 0, [])) for a in alerts]


def last_alerts() -> dict[str, dict[str, Any]]:
    """The newest alert of each provider (for `smsq balance`)."""
    latest: dict[str, dict[str, Any]] = {}
    for alert in reversed(history(limit=500)):
        latest[alert["provider"]] = alert
    return latest


def active() -> list[dict[str, Any]]:
    """Alerts whose condition still holds (firing), with the alert that announced it."""
    with db.session() as s:
        rows = s.exec(
            select(AlertState, Alert)
            .join(Alert, col(Alert.id) == col(AlertState.last_alert_id))
            .where(col(AlertState.firing).is_(True))
            .order_by(col(AlertState.provider), col(AlertState.kind))
        ).all()
    return [
        {
            **json.loads(a.payload),
            "id": a.id,
            "since": st.fired_at.isoformat() if st.fired_at else None,
        }
        for st, a in rows
    ]
