"""The send path's decisions, as pure functions: no store, no Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.sending.decisions import (
    counted_attempts,
    fallbacks_after_reroute,
    hold_plan,
    pick_fallback,
    retry_plan,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
LIMITS = {"max_attempts": 5, "deadline_seconds": 1800.0, "sweep_after_seconds": 120.0}


def test_the_first_usable_fallback_wins_and_the_skipped_say_why() -> None:
    reasons = {"smsclub": "smsclub circuit breaker open", "kingsms": None, "sms1601": None}
    target, skipped = pick_fallback("keccel", "keccel, smsclub,kingsms,sms1601", False, reasons.get)
    assert target == "kingsms"
    assert skipped == ["smsclub circuit breaker open"]


def test_no_fallback_when_none_can_take_it() -> None:
    target, skipped = pick_fallback("keccel", "smsclub", False, lambda n: f"{n} is not configured")
    assert (target, skipped) == (None, ["smsclub is not configured"])
    assert pick_fallback("keccel", "", False, lambda n: None) == (None, [])


def test_a_message_whose_answer_was_lost_is_never_rerouted() -> None:
    target, skipped = pick_fallback("smsclub", "keccel", True, lambda n: None)
    assert target is None and "may have it already" in skipped[0]


def test_a_rerouted_message_keeps_its_origin_as_the_last_fallback() -> None:
    assert fallbacks_after_reroute("smsclub,kingsms", "smsclub", "keccel") == "kingsms,keccel"
    assert fallbacks_after_reroute("keccel,smsclub", "smsclub", "keccel") == "keccel"


def test_a_retry_within_the_limits_waits_in_the_broker_with_the_sweep_behind() -> None:
    plan = retry_plan(attempts=2, throttled=False, delay=4.0, created_at=NOW, now=NOW, **LIMITS)
    assert not plan.give_up and plan.requeue and plan.attempts == 2
    assert plan.next_attempt_at == NOW + timedelta(seconds=124)


def test_a_long_retry_lives_in_the_store_not_the_broker() -> None:
    plan = retry_plan(attempts=2, throttled=False, delay=300.0, created_at=NOW, now=NOW, **LIMITS)
    assert not plan.give_up and not plan.requeue
    assert plan.next_attempt_at == NOW + timedelta(seconds=300)


def test_attempts_or_the_deadline_used_up_give_up() -> None:
    spent = retry_plan(attempts=5, throttled=False, delay=1.0, created_at=NOW, now=NOW, **LIMITS)
    assert spent.give_up and spent.next_attempt_at is None
    late = NOW + timedelta(seconds=1799)
    past = retry_plan(attempts=1, throttled=False, delay=2.0, created_at=NOW, now=late, **LIMITS)
    assert past.give_up


def test_a_throttled_try_is_not_counted_and_never_gives_up() -> None:
    assert counted_attempts(5, throttled=True) == 4
    plan = retry_plan(attempts=9, throttled=True, delay=2.0, created_at=NOW, now=NOW, **LIMITS)
    assert not plan.give_up


def test_a_blocked_account_fails_at_once_with_the_reason_and_the_fallbacks() -> None:
    plan = hold_plan(
        reason="keccel account blocked: expired",
        skipped=["smsclub is not configured"],
        wait=None,
        created_at=NOW,
        now=NOW,
        deadline_seconds=1800,
        sweep_after_seconds=120,
    )
    assert plan.fail == (
        "not sent: keccel account blocked: expired; fallbacks: smsclub is not configured"
    )


def test_an_open_breaker_waits_its_cool_down_unless_past_the_deadline() -> None:
    common = {"reason": "keccel circuit breaker open", "skipped": [], "created_at": NOW}
    waits = hold_plan(**common, wait=30.0, now=NOW, deadline_seconds=1800, sweep_after_seconds=120)
    assert waits.fail is None and waits.requeue
    assert waits.next_attempt_at == NOW + timedelta(seconds=150)
    late = hold_plan(
        **common,
        wait=30.0,
        now=NOW + timedelta(seconds=1790),
        deadline_seconds=1800,
        sweep_after_seconds=120,
    )
    assert late.fail == "gave up: keccel circuit breaker open past the retry deadline"
