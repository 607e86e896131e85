"""Balance and credit checks of every configured provider (beat runs `check_all`).

Each check reads the balance, unit, expiry and account state from the gateway,
stores a snapshot, refreshes the send guard (`worker.sending.guard`), works out the
burn rate and projection (`worker.balance.rules.burn_rate`) and raises or
re-arms alerts (`worker.balance.alerts`), then delivers what is due in the outbox.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import col, select

from producer import db
from producer.models import BalanceSnapshot, Message, utcnow
from producer.settings import get_settings, provider_settings
from worker.balance import alerts
from worker.balance.rules import (
    KINDS,
    Burn,
    Decision,
    Limits,
    Reading,
    as_utc,
    burn_rate,
    decide,
    describe_projection,
    sentence,
)
from worker.gateways.base import ProviderError
from worker.gateways.registry import get_adapter
from worker.sending import guard

log = logging.getLogger("smsq.balance")

KEEP_SNAPSHOTS = timedelta(days=90)


@dataclass
class BalanceRow:
    provider: str
    amount: float | None
    unit: str | None
    expires_at: datetime | None  # aware UTC
    active: bool | None
    error: str | None = None
    burn: Burn | None = None
    last_alert: dict[str, Any] | None = None
    raised: list[str] = field(default_factory=list)  # alert kinds this check raised

    @property
    def state(self) -> str:
        if self.error:
            return "error"
        if self.active is False:
            return "inactive"
        if self.expires_at is not None and self.expires_at <= datetime.now(self.expires_at.tzinfo):
            return "expired"
        return "active"

    @property
    def projection_days(self) -> float | None:
        return self.burn.projection_days(self.amount) if self.burn else None

    def reading(self) -> Reading:
        return Reading(
            self.provider, self.amount, self.unit, self.expires_at, self.active, self.error
        )

    def to_dict(self) -> dict[str, object]:
        days = self.projection_days
        return {
            "provider": self.provider,
            "balance": self.amount,
            "unit": self.unit,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "state": self.state,
            "error": self.error,
            "projection_days": None if days is None else round(days, 2),
            "projection": describe_projection(days),
            "burn_per_day": self.burn.per_day if self.burn else None,
            "burn_basis": self.burn.basis if self.burn else None,
            "last_alert": _alert_summary(self.last_alert),
        }


def _alert_summary(alert: dict[str, Any] | None) -> dict[str, Any] | None:
    if not alert:
        return None
    return {k: alert.get(k) for k in ("id", "kind", "message", "created_at")}


def fetch_one(provider: str) -> BalanceRow:
    try:
        balance = get_adapter(provider).fetch_balance()
    except ProviderError as exc:
        return BalanceRow(provider, None, None, None, None, error=str(exc))
    return BalanceRow(
        provider, balance.amount, balance.unit, as_utc(balance.expires_at), balance.active
    )


def fetch_all() -> list[BalanceRow]:
    return [fetch_one(p) for p in get_settings().configured_providers()]


def limits_for(provider: str) -> Limits:
    ps = provider_settings(provider)
    return Limits(ps.low_balance, float(ps.expiry_warn_days), get_settings().alert_rearm_ratio)


# -- history -------------------------------------------------------------------------
def store_snapshot(row: BalanceRow, now: datetime) -> None:
    with db.session() as s:
        s.add(
            BalanceSnapshot(
                provider=row.provider,
                amount=row.amount,
                unit=row.unit,
                expires_at=row.expires_at,
                active=row.active,
                state=row.state,
                error=row.error,
                created_at=now,
            )
        )
        s.commit()


def burn_for(provider: str, unit: str | None, now: datetime | None = None) -> Burn:
    """The provider's burn rate from the store: snapshots in the window, else segments sent."""
    now = now or utcnow()
    since = now - timedelta(days=get_settings().burn_window_days)
    with db.session() as s:
        history = s.exec(
            select(BalanceSnapshot.created_at, BalanceSnapshot.amount)
            .where(
                BalanceSnapshot.provider == provider,
                BalanceSnapshot.unit == unit,
                col(BalanceSnapshot.amount).is_not(None),
                col(BalanceSnapshot.created_at) >= since,
                col(BalanceSnapshot.created_at) <= now,
            )
            .order_by(col(BalanceSnapshot.created_at), col(BalanceSnapshot.id))
        ).all()
        segments, first = s.exec(
            select(func.coalesce(func.sum(Message.segments), 0), func.min(Message.sent_at)).where(
                Message.provider == provider,
                col(Message.sent_at).is_not(None),
                col(Message.sent_at) >= since,
            )
        ).one()
    first_at = as_utc(first) if first is not None else None
    span = now - first_at if first_at is not None else timedelta(0)
    return burn_rate(unit, [(as_utc(t), float(a)) for t, a in history], int(segments), span)  # type: ignore[misc]


def enrich(rows: list[BalanceRow], now: datetime | None = None) -> list[BalanceRow]:
    """Add burn rate, projection and last alert from the store (for `smsq balance`)."""
    last = alerts.last_alerts()
    for row in rows:
        if row.error is None:
            row.burn = burn_for(row.provider, row.unit, now)
        row.last_alert = last.get(row.provider)
    return rows


def prune(now: datetime) -> None:
    with db.session() as s:
        s.execute(
            delete(BalanceSnapshot).where(col(BalanceSnapshot.created_at) < now - KEEP_SNAPSHOTS)
        )
        s.commit()


# -- alerts --------------------------------------------------------------------------
def payload(row: BalanceRow, kind: str, limits: Limits, now: datetime) -> dict[str, Any]:
    """The alert's JSON body (webhook) and e-mail details: no secrets, no URLs."""
    days = row.projection_days
    return {
        "kind": kind,
        "provider": row.provider,
        "balance": row.amount,
        "unit": row.unit,
        "threshold": limits.low_balance,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "expiry_warn_days": limits.expiry_warn_days,
        "state": row.state,
        "projection_days": None if days is None else round(days, 2),
        "burn_per_day": row.burn.per_day if row.burn else None,
        "burn_basis": row.burn.basis if row.burn else None,
        "message": sentence(kind, row.reading(), limits, now, days),
    }


def apply_alerts(row: BalanceRow, now: datetime) -> list[str]:
    """Fire or re-arm each alert kind for one check; the kinds this call raised."""
    limits = limits_for(row.provider)
    states = alerts.firing(row.provider)
    raised: list[str] = []
    for kind in KINDS:
        decision = decide(kind, row.reading(), limits, now, states[kind])
        if decision is Decision.FIRE:
            if alerts.raise_alert(row.provider, kind, payload(row, kind, limits, now), now):
                raised.append(kind)
        elif decision is Decision.REARM:
            alerts.rearm(row.provider, kind, now)
    return raised


def record_guard(row: BalanceRow, now: datetime | None = None) -> None:
    """Tell the send guard what a successful reading saw (a failed one tells nothing)."""
    if row.error is None:
        ttl = 3 * get_settings().balance_check_seconds
        guard.record(row.provider, row.expires_at, row.active, now or utcnow(), ttl)


def check_one(row: BalanceRow, now: datetime) -> BalanceRow:
    """Store, guard, project and alert for one provider's fresh reading."""
    store_snapshot(row, now)
    record_guard(row, now)
    if row.error is None:
        row.burn = burn_for(row.provider, row.unit, now)
    row.raised = apply_alerts(row, now)
    log.info(
        "balance %s: %s %s (%s), runs out in %s",
        row.provider,
        row.amount,
        row.unit or "",
        row.state if not row.error else f"error: {row.error}",
        describe_projection(row.projection_days),
        extra={"provider": row.provider},
    )
    return row


def check_all(now: datetime | None = None) -> dict[str, object]:
    """The periodic check: every configured provider, then the alert outbox."""
    now = now or utcnow()
    alerts.deliver_due(now)  # earlier alerts whose channel was down
    rows = [check_one(row, now) for row in fetch_all()]
    alerts.deliver_due(now)
    alerts.schedule_retry(now)
    prune(now)
    last = alerts.last_alerts()
    for row in rows:
        row.last_alert = last.get(row.provider)
    return {r.provider: {**r.to_dict(), "raised": r.raised} for r in rows}
