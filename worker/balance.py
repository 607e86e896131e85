"""Balance and credit checks of every configured provider (beat runs `check_all`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from producer.settings import get_settings
from worker.adapters import get_adapter
from worker.providers.base import ProviderError

log = logging.getLogger("smsq.balance")


@dataclass
class BalanceRow:
    provider: str
    amount: float | None
    unit: str | None
    expires_at: datetime | None
    active: bool | None
    error: str | None = None

    @property
    def state(self) -> str:
        if self.error:
            return "error"
        if self.active is False:
            return "inactive"
        if self.expires_at is not None and self.expires_at <= datetime.now(self.expires_at.tzinfo):
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "balance": self.amount,
            "unit": self.unit,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "state": self.state,
            "error": self.error,
        }


def fetch_one(provider: str) -> BalanceRow:
    try:
        balance = get_adapter(provider).fetch_balance()
    except ProviderError as exc:
        return BalanceRow(provider, None, None, None, None, error=str(exc))
    return BalanceRow(provider, balance.amount, balance.unit, balance.expires_at, balance.active)


def fetch_all() -> list[BalanceRow]:
    return [fetch_one(p) for p in get_settings().configured_providers()]


def check_all() -> dict[str, object]:
    rows = fetch_all()
    for row in rows:
        log.info(
            "balance %s: %s %s (%s)",
            row.provider,
            row.amount,
            row.unit or "",
            row.state,
            extra={"provider": row.provider},
        )
    return {r.provider: r.to_dict() for r in rows}
