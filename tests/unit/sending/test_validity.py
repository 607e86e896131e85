"""Validity (ttl) through the real send path and beat's tick, on a real SQLite store and
Redis; only the gateway is fake, so each test sees whether a request was made."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from producer import db
from producer.models import AppNotification, utcnow
from producer.status import Status
from tests.unit.sending import test_send_resilience as base
from tests.unit.sending.test_send_resilience import FakeGateway, Requeue, add_row, row, send
from worker.gateways.base import RetryableProviderError
from worker.resilience import sweeps
from worker.sending import send as sending
from worker.sending.decisions import expired_ids, past_validity

redis_url = base.redis_url  # the fixtures: embedded Redis, a clean store, fake gateways
store = base.store
gateways = base.gateways
CALLBACK = "https://app.example.com/smsq"


def at(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


def notifications(mid: str) -> list[dict[str, object]]:
    with db.session() as s:
        found = s.exec(select(AppNotification).where(AppNotification.message_id == mid))
        return [json.loads(n.payload) for n in found]


# -- the decision ---------------------------------------------------------------------
def test_validity_ends_at_its_moment() -> None:
    now = utcnow()
    assert not past_validity(None, now)
    assert not past_validity(now + timedelta(microseconds=1), now)
    assert past_validity(now, now)
    assert expired_ids([("a", now), ("b", None), ("c", now + timedelta(1))], now) == {"a"}


# -- the send path --------------------------------------------------------------------
def test_a_claimed_message_past_its_ttl_is_expired_and_never_sent(
    gateways: dict[str, FakeGateway],
) -> None:
    mid = add_row(ttl=30, expires_at=at(-1), callback_url=CALLBACK, priority="high")
    outcome = send(mid)
    final = row(mid)
    assert final.status == Status.EXPIRED.value
    assert final.error is not None
    assert final.error.startswith("expired: not sent within its validity (ttl 30 s")
    assert final.attempts == 0  # no request was made
    assert gateways["keccel"].calls == []
    assert outcome.expired == 1 and outcome.sent == 0
    assert [(n["previous_status"], n["status"]) for n in notifications(mid)] == [
        ("sending", "expired")
    ]


def test_a_message_within_its_ttl_is_sent(gateways: dict[str, FakeGateway]) -> None:
    mid = add_row(ttl=30, expires_at=at(30))
    send(mid)
    assert row(mid).status == Status.SENT.value
    assert gateways["keccel"].calls == [[mid]]


def test_only_the_stale_rows_of_a_batch_are_held_back(gateways: dict[str, FakeGateway]) -> None:
    stale = add_row(ttl=5, expires_at=at(-1))
    fresh = add_row(ttl=60, expires_at=at(60))
    sending.send_messages([stale, fresh], Requeue())
    assert gateways["keccel"].calls == [[fresh]]
    assert (row(stale).status, row(fresh).status) == (Status.EXPIRED.value, Status.SENT.value)


def test_a_retry_is_never_sent_once_the_ttl_has_passed(gateways: dict[str, FakeGateway]) -> None:
    gateways["keccel"].answers = [RetryableProviderError("keccel: HTTP 503", code="503")]
    mid = add_row(ttl=60, expires_at=at(60))
    send(mid)
    assert row(mid).status == Status.QUEUED.value  # a retry is due
    with db.session() as s:  # the retry's wait outlives the validity
        r = s.get(sending.Message, mid)
        assert r is not None
        r.expires_at = at(-0.01)
        s.add(r)
        s.commit()
    send(mid)
    assert row(mid).status == Status.EXPIRED.value
    assert gateways["keccel"].calls == [[mid]]  # the first try only


def test_a_validity_that_runs_out_waiting_for_the_rate_slot_is_not_sent(
    gateways: dict[str, FakeGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    mid = add_row(ttl=1, expires_at=at(0.2))

    def slow_slot(provider: str, rank: int) -> float:  # the slot comes after the validity ends
        time.sleep(0.3)
        return 0.0

    monkeypatch.setattr(sending, "_rate_wait", slow_slot)
    send(mid)
    assert row(mid).status == Status.EXPIRED.value
    assert gateways["keccel"].calls == []


# -- beat -----------------------------------------------------------------------------
def test_the_tick_expires_waiting_rows_past_their_ttl_instead_of_queueing_them(
    store: None,
) -> None:
    due_stale = add_row(
        status="scheduled", send_at=at(-1), ttl=10, expires_at=at(-1), callback_url=CALLBACK
    )
    retry_stale = add_row(status="queued", next_attempt_at=at(600), ttl=10, expires_at=at(-1))
    due_fresh = add_row(status="queued", next_attempt_at=at(-1), ttl=600, expires_at=at(600))
    scheduled_fresh = add_row(status="scheduled", send_at=at(-1), ttl=600, expires_at=at(599))
    queued: list[list[str]] = []
    result = sweeps.tick(lambda ids, **_: queued.append(list(ids)), lambda p, ids: None)
    assert result.expired == 2
    for mid in (due_stale, retry_stale):
        assert row(mid).status == Status.EXPIRED.value
        assert "not sent within its validity" in (row(mid).error or "")
    assert row(scheduled_fresh).status == Status.QUEUED.value  # released as usual
    assert sorted(i for ids in queued for i in ids) == sorted([due_fresh, scheduled_fresh])
    assert [n["status"] for n in notifications(due_stale)] == ["expired"]
