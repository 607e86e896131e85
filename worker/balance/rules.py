"""The pure part of balance monitoring: when an alert fires or re-arms, burn rate, projection.

No I/O here, so the rules are table-tested; `worker.balance.alerts` applies them to the
shared alert state in the store, `worker.balance.checks` feeds them the checks.

Hysteresis: an alert fires once when its condition starts to hold and re-arms
only when the condition has cleared with a margin (a low balance must climb
above threshold x SMSQ_ALERT_REARM_RATIO), so a balance hovering around the
threshold gives one alert, not one per check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from itertools import pairwise

LOW_BALANCE, EXPIRING, EXPIRED, INACTIVE = "low_balance", "expiring", "expired", "inactive"
KINDS: tuple[str, ...] = (LOW_BALANCE, EXPIRING, EXPIRED, INACTIVE)
# Snapshots must span at least this long before their balance drop is trusted as a rate.
MIN_HISTORY = timedelta(hours=1)
CREDIT_UNITS = frozenset({"credits", "credit", "sms"})


class Decision(Enum):
    FIRE = "fire"  # the condition starts to hold and the alert is armed: raise it
    REARM = "rearm"  # the condition has cleared with margin: the next crossing alerts again
    HOLD = "hold"  # nothing changes


@dataclass(frozen=True)
class Reading:
    """What one balance check saw (expiry as aware UTC)."""

    provider: str
    amount: float | None
    unit: str | None
    expires_at: datetime | None
    active: bool | None
    error: str | None = None


@dataclass(frozen=True)
class Limits:
    low_balance: float | None  # SMSQ_P_LOW_BALANCE; None: no balance alert
    expiry_warn_days: float  # SMSQ_P_EXPIRY_WARN_DAYS
    rearm_ratio: float = 1.1  # SMSQ_ALERT_REARM_RATIO


def as_utc(value: datetime | None) -> datetime | None:
    """Adapters give naive UTC datetimes; the store and the rules use aware UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def condition(kind: str, r: Reading, limits: Limits, now: datetime) -> bool | None:
    """Does the alert's condition hold? None: the check cannot tell (failed, not reported)."""
    if r.error:
        return None
    if kind == LOW_BALANCE:
        if limits.low_balance is None or r.amount is None:
            return None
        return r.amount <= limits.low_balance
    if kind == EXPIRED:
        return r.expires_at is not None and r.expires_at <= now
    if kind == EXPIRING:
        if r.expires_at is None:
            return False
        return now < r.expires_at <= now + timedelta(days=limits.expiry_warn_days)
    if kind == INACTIVE:
        return None if r.active is None else r.active is False
    raise ValueError(f"unknown alert kind {kind!r}")


def recovered(kind: str, r: Reading, limits: Limits, now: datetime) -> bool:
    """Has a firing alert's condition cleared far enough to re-arm it?"""
    if r.error:
        return False
    if kind == LOW_BALANCE:
        if limits.low_balance is None:
            return True  # the threshold was removed: nothing to watch
        return r.amount is not None and r.amount > limits.low_balance * limits.rearm_ratio
    if kind == EXPIRING:
        # Renewed beyond the warning window (or no expiry any more). An expiry that
        # simply passes keeps `expiring` firing: `expired` takes over, no new warning.
        return r.expires_at is None or r.expires_at > now + timedelta(days=limits.expiry_warn_days)
    if kind == EXPIRED:
        return r.expires_at is None or r.expires_at > now
    if kind == INACTIVE:
        return r.active is True
    raise ValueError(f"unknown alert kind {kind!r}")


def decide(kind: str, r: Reading, limits: Limits, now: datetime, firing: bool) -> Decision:
    """One step of the alert's state machine: armed -> FIRE -> firing -> REARM -> armed."""
    if not firing:
        return Decision.FIRE if condition(kind, r, limits, now) else Decision.HOLD
    return Decision.REARM if recovered(kind, r, limits, now) else Decision.HOLD


@dataclass(frozen=True)
class Burn:
    """How fast an account's balance goes, in the balance's own unit per day."""

    per_day: float | None
    basis: str  # "balance history", "segments sent", or why there is no rate

    def projection_days(self, amount: float | None) -> float | None:
        """Days until the balance runs out at this rate; None without usage or balance."""
        if amount is None or not self.per_day or self.per_day <= 0:
            return None
        return max(0.0, amount) / self.per_day


def drop_per_day(history: Sequence[tuple[datetime, float]]) -> tuple[float, timedelta]:
    """Balance consumed per day over `history` (time, amount), oldest first, and its span.

    Only drops between consecutive snapshots count; a rise is a top-up and is
    ignored (a top-up and spending between the same two checks hide that
    interval's spending, so this errs low, never high).
    """
    if len(history) < 2:
        return 0.0, timedelta(0)
    used = sum(max(0.0, a - b) for (_, a), (_, b) in pairwise(history))
    span = history[-1][0] - history[0][0]
    days = span.total_seconds() / 86400
    return (used / days if days > 0 else 0.0), span


def burn_rate(
    unit: str | None,
    history: Sequence[tuple[datetime, float]],
    segments: int,
    segments_span: timedelta,
) -> Burn:
    """The honest burn rate for this unit.

    Balance history first (at least MIN_HISTORY of snapshots): it is measured in
    the account's own unit (credits or money) and sees every user of the
    account. Without enough history, segments sent by smsq per day, but only
    for credit accounts (one credit a segment); a money balance (UAH, XOF)
    cannot be projected from segments without a price, so it waits for history.
    `segments_span` is how long those segments took, at least a day.
    """
    per_day, span = drop_per_day(history)
    if span >= MIN_HISTORY:
        return Burn(per_day, "balance history")
    if (unit or "").strip().lower() in CREDIT_UNITS:
        if segments <= 0:
            return Burn(0.0, "segments sent")
        days = max(segments_span.total_seconds() / 86400, 1.0)
        return Burn(segments / days, "segments sent")
    return Burn(None, "not enough balance history")


def describe_projection(days: float | None) -> str:
    """`about 3 days` / `less than a day` / `no usage` for tables and alert sentences."""
    if days is None:
        return "no usage"
    if days < 1:
        return "less than a day"
    n = round(days)
    return f"about {n} day{'s' if n != 1 else ''}"


def _amount(value: float | None, unit: str | None) -> str:
    if value is None:
        return "unknown"
    return f"{value:g} {unit or ''}".strip()


def sentence(kind: str, r: Reading, limits: Limits, now: datetime, projection: float | None) -> str:
    """The human sentence of an alert (webhook `message`, e-mail subject and body, log)."""
    runs_out = (
        f"; at the current rate it runs out in {describe_projection(projection)}"
        if projection is not None
        else ""
    )
    when = r.expires_at.strftime("%Y-%m-%d %H:%M UTC") if r.expires_at else ""
    if kind == LOW_BALANCE:
        return (
            f"{r.provider} balance is {_amount(r.amount, r.unit)}, at or below the "
            f"threshold of {_amount(limits.low_balance, r.unit)}{runs_out}."
        )
    if kind == EXPIRING and r.expires_at is not None:
        left = (r.expires_at - now).total_seconds() / 86400
        return (
            f"{r.provider} credits ({_amount(r.amount, r.unit)}) expire on {when}, "
            f"in {describe_projection(left)}: renew the account."
        )
    if kind == EXPIRED:
        return (
            f"{r.provider} credits expired on {when}: sending through {r.provider} "
            "stops until the account is renewed."
        )
    if kind == INACTIVE:
        return (
            f"{r.provider} reports the account inactive: sending through {r.provider} "
            "stops until it is active again."
        )
    return f"{r.provider}: {kind}"
