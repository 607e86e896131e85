"""The pure rules of balance monitoring as tables: hysteresis, burn rate, projection, guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.balance.rules import (
    EXPIRED,
    EXPIRING,
    INACTIVE,
    LOW_BALANCE,
    Burn,
    Decision,
    Limits,
    Reading,
    as_utc,
    burn_rate,
    decide,
    describe_projection,
    drop_per_day,
    sentence,
)
from worker.sending.guard import reason

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits(low_balance=100.0, expiry_warn_days=7, rearm_ratio=1.1)


def reading(
    amount: float | None = 500.0,
    expires_in_days: float | None = None,
    active: bool | None = True,
    error: str | None = None,
) -> Reading:
    expires = None if expires_in_days is None else NOW + timedelta(days=expires_in_days)
    return Reading("keccel", amount, "credits", expires, active, error)


def run(kind: str, readings: list[Reading], limits: Limits = LIMITS) -> list[str]:
    """Feed the state machine a sequence of checks; the alerts it would raise, in order."""
    firing, fired = False, []
    for i, r in enumerate(readings):
        decision = decide(kind, r, limits, NOW, firing)
        if decision is Decision.FIRE:
            firing = True
            fired.append(f"fire@{i}")
        elif decision is Decision.REARM:
            firing = False
    return fired


@pytest.mark.parametrize(
    ("amounts", "expected"),
    [
        ([500, 400, 300], []),  # never at or below the threshold
        ([100], ["fire@0"]),  # at the threshold counts
        ([42, 42, 41, 30, 20], ["fire@0"]),  # one alert over many checks
        ([42, 105, 42, 108, 99], ["fire@0"]),  # hovering inside the margin: still one
        ([42, 111, 42], ["fire@0", "fire@2"]),  # recovered above 110, then a second crossing
        ([500, 99, 5000, 100], ["fire@1", "fire@3"]),  # a top-up re-arms
        ([42, None, 42], ["fire@0"]),  # a failed check decides nothing
    ],
)
def test_low_balance_hysteresis(amounts: list[float | None], expected: list[str]) -> None:
    checks = [reading(a) if a is not None else reading(None, error="timeout") for a in amounts]
    assert run(LOW_BALANCE, checks) == expected


@pytest.mark.parametrize(
    ("limits", "amounts", "expected"),
    [
        (Limits(None, 7), [0, 0], []),  # no threshold set: no balance alert
        (Limits(100, 7, rearm_ratio=1.0), [42, 101, 42], ["fire@0", "fire@2"]),
        (Limits(100, 7, rearm_ratio=2.0), [42, 150, 42, 201, 42], ["fire@0", "fire@4"]),
        (Limits(0, 7), [0, 1, 0], ["fire@0", "fire@2"]),  # empty account, threshold 0
    ],
)
def test_low_balance_threshold_and_ratio(
    limits: Limits, amounts: list[float], expected: list[str]
) -> None:
    assert run(LOW_BALANCE, [reading(a) for a in amounts], limits) == expected


@pytest.mark.parametrize(
    ("kind", "days", "expected"),
    [
        (EXPIRING, [30, 10, 8], []),
        (EXPIRING, [3, 3, 2.5], ["fire@0"]),  # within 7 days: once
        (EXPIRING, [7], ["fire@0"]),  # exactly at the window's edge
        (EXPIRING, [3, 60, 3], ["fire@0", "fire@2"]),  # renewed, then close again
        (EXPIRING, [3, -1, 3], ["fire@0"]),  # expiring, expired, renewed short: no new warning
        (EXPIRING, [None, 2], ["fire@1"]),
        (EXPIRED, [3, -0.01, -1], ["fire@1"]),
        (EXPIRED, [-1, 30, -1], ["fire@0", "fire@2"]),  # renewed, then expired again
        (EXPIRED, [None, None], []),
    ],
)
def test_expiry_alerts(kind: str, days: list[float | None], expected: list[str]) -> None:
    assert run(kind, [reading(expires_in_days=d) for d in days]) == expected


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([True, True], []),
        ([False, False, False], ["fire@0"]),
        ([False, None, False], ["fire@0"]),  # "not reported" does not re-arm
        ([False, True, False], ["fire@0", "fire@2"]),
        ([None, None], []),
    ],
)
def test_inactive_alert(states: list[bool | None], expected: list[str]) -> None:
    assert run(INACTIVE, [reading(active=s) for s in states]) == expected


T0 = datetime(2026, 6, 1, tzinfo=UTC)


def hist(*points: tuple[float, float]) -> list[tuple[datetime, float]]:
    """(hours after T0, amount) pairs."""
    return [(T0 + timedelta(hours=h), a) for h, a in points]


@pytest.mark.parametrize(
    ("history", "per_day", "span_hours"),
    [
        ([], 0.0, 0),
        (hist((0, 1000)), 0.0, 0),
        (hist((0, 1000), (24, 900)), 100.0, 24),
        (hist((0, 1000), (12, 950), (24, 900)), 100.0, 24),
        # a top-up (900 -> 5000) is ignored, the spending around it counts
        (hist((0, 1000), (12, 900), (13, 5000), (24, 4900)), 200.0, 24),
        (hist((0, 1000), (48, 1000)), 0.0, 48),
    ],
)
def test_drop_per_day(
    history: list[tuple[datetime, float]], per_day: float, span_hours: float
) -> None:
    rate, span = drop_per_day(history)
    assert rate == pytest.approx(per_day)
    assert span == timedelta(hours=span_hours)


@pytest.mark.parametrize(
    ("unit", "history", "segments", "segments_hours", "per_day", "basis"),
    [
        # enough history: the balance's own drop, in any unit
        ("UAH", hist((0, 100), (24, 90)), 0, 0, 10.0, "balance history"),
        ("credits", hist((0, 1000), (24, 700)), 50, 24, 300.0, "balance history"),
        # not enough history: credits from segments sent (at least one day of span)
        ("credits", hist((0, 1000)), 50, 2, 50.0, "segments sent"),
        ("credits", [], 300, 72, 100.0, "segments sent"),
        ("credits", [], 0, 0, 0.0, "segments sent"),
        # money cannot be projected from segments
        ("XOF", hist((0, 1000), (0.5, 900)), 500, 24, None, "not enough balance history"),
    ],
)
def test_burn_rate(
    unit: str,
    history: list[tuple[datetime, float]],
    segments: int,
    segments_hours: float,
    per_day: float | None,
    basis: str,
) -> None:
    burn = burn_rate(unit, history, segments, timedelta(hours=segments_hours))
    assert burn.basis == basis
    assert burn.per_day == (pytest.approx(per_day) if per_day is not None else None)


@pytest.mark.parametrize(
    ("per_day", "amount", "days", "text"),
    [
        (100.0, 1000.0, 10.0, "about 10 days"),
        (100.0, 150.0, 1.5, "about 2 days"),
        (100.0, 50.0, 0.5, "less than a day"),
        (100.0, -5.0, 0.0, "less than a day"),
        (0.0, 1000.0, None, "no usage"),
        (None, 1000.0, None, "no usage"),
        (100.0, None, None, "no usage"),
        (1000.0, 1000.0, 1.0, "about 1 day"),
    ],
)
def test_projection(
    per_day: float | None, amount: float | None, days: float | None, text: str
) -> None:
    projected = Burn(per_day, "x").projection_days(amount)
    assert projected == (pytest.approx(days) if days is not None else None)
    assert describe_projection(projected) == text


def test_sentences_name_the_provider_amount_and_projection() -> None:
    low = sentence(LOW_BALANCE, reading(42), LIMITS, NOW, 3.2)
    assert "keccel" in low and "42 credits" in low and "100 credits" in low
    assert "about 3 days" in low
    soon = sentence(EXPIRING, reading(expires_in_days=3), LIMITS, NOW, None)
    assert "2026-06-04 12:00 UTC" in soon and "about 3 days" in soon
    assert "renewed" in sentence(EXPIRED, reading(expires_in_days=-1), LIMITS, NOW, None)
    assert "inactive" in sentence(INACTIVE, reading(active=False), LIMITS, NOW, None)


def test_as_utc_marks_naive_adapter_times_as_utc() -> None:
    naive = datetime(2026, 12, 31, 6, 46, 17)
    assert as_utc(naive) == datetime(2026, 12, 31, 6, 46, 17, tzinfo=UTC)
    assert as_utc(None) is None


@pytest.mark.parametrize(
    ("state", "blocked"),
    [
        (None, None),
        ({}, None),
        ({"active": True, "expires_at": None}, None),
        ({"active": None, "expires_at": (NOW + timedelta(days=3)).isoformat()}, None),
        ({"active": True, "expires_at": (NOW - timedelta(seconds=1)).isoformat()}, "expired"),
        # the expiry passed after the last check: compared with now, still blocks
        ({"active": True, "expires_at": NOW.isoformat(), "checked_at": "2026-05-31"}, "expired"),
        ({"active": False, "expires_at": None}, "inactive"),
    ],
)
def test_guard_reason(state: dict[str, object] | None, blocked: str | None) -> None:
    text = reason("keccel", state, NOW)
    if blocked is None:
        assert text is None
    else:
        assert text is not None and blocked in text and "keccel" in text
