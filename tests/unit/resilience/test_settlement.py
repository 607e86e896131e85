"""Uncertain-send settlement as a pure function (`reconcile.decide`): no store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.gateways.base import LookupResult
from worker.resilience.reconcile import decide

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def verdict(policy: str = "reconcile", answer: LookupResult | None = None, **kw):  # type: ignore[no-untyped-def]
    facts = {
        "cause": "worker lost",
        "provider": "smsclub",
        "attempts": 1,
        "max_attempts": 5,
        "copy_refused_until": None,
        "now": NOW,
        "deadline": NOW + timedelta(minutes=30),
    }
    facts.update(kw)
    return decide(policy=policy, answer=answer, **facts)


def test_fail_policy_fails_whatever_the_gateway_says() -> None:
    got = verdict("fail", LookupResult("found", "gw-1"))
    assert got.outcome == "failed" and "SMSQ_UNCERTAIN_SEND=fail" in got.text


def test_resend_policy_and_a_confirmed_absence_queue_it_again_within_the_attempts() -> None:
    assert verdict("resend").outcome == "requeued"
    absent = verdict(answer=LookupResult("not_found", detail="not in the report"))
    assert absent.outcome == "requeued" and "a resend is safe" in absent.text
    spent = verdict(answer=LookupResult("not_found", detail="x"), attempts=5)
    assert spent.outcome == "failed" and "5 attempt(s) are used up" in spent.text


def test_a_found_send_is_adopted() -> None:
    got = verdict(answer=LookupResult("found", "gw-9", detail="report line 3"))
    assert got.outcome == "found" and "report line 3" in got.text


def test_unknown_is_resent_only_while_the_gateway_still_refuses_a_copy() -> None:
    unknown = LookupResult("unknown", detail="no lookup")
    inside = verdict(answer=unknown, copy_refused_until=NOW + timedelta(seconds=60))
    assert inside.outcome == "requeued" and inside.keep_maybe_sent_at
    too_close = verdict(answer=unknown, copy_refused_until=NOW + timedelta(seconds=10))
    assert too_close.outcome == "left_sent"
    assert verdict(answer=unknown).outcome == "left_sent"  # no window: never resent blindly


def test_a_failed_lookup_is_asked_again_until_the_deadline() -> None:
    failed = LookupResult("unknown", detail="lookup failed", raw={"retryable": True})
    assert verdict(answer=failed).outcome == "later"
    late = verdict(answer=failed, deadline=NOW - timedelta(seconds=1))
    assert late.outcome == "left_sent"
