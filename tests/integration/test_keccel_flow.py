"""Keccel end to end: producer -> Redis -> real worker -> sandbox over HTTP -> store."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import func, select

from producer import InvalidMessage, db, send_bulk, send_sms
from producer.enqueue import publish_send
from producer.models import Message, MessageEvent
from producer.status import Status
from tests.integration.conftest import wait_status
from worker.gateways.sandbox.base import Fault

pytestmark = pytest.mark.integration


def unique_text(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:10]}"


def sim_messages(sim, text: str) -> list:  # type: ignore[no-untyped-def]
    return [m for m in list(sim.messages.values()) if m.text == text]


def test_happy_path_reaches_delivered_by_polling(stack, sims) -> None:  # type: ignore[no-untyped-def]
    text = unique_text("happy")
    mid = send_sms("243851234567", text, provider="keccel", sender="SHOP")
    st = wait_status(mid, Status.DELIVERED)
    assert st.provider == "keccel"
    assert st.provider_message_id
    assert st.attempts == 1
    [sent] = sim_messages(sims["keccel"], text)
    assert sent.id == st.provider_message_id
    assert sent.sender == "SHOP"
    with db.session() as s:
        events = s.exec(select(MessageEvent).where(MessageEvent.message_id == mid)).all()
    moves = [(e.old_status, e.new_status) for e in events if e.applied and e.kind == "status"]
    assert moves == [
        (None, "queued"),
        ("queued", "sending"),
        ("sending", "sent"),
        ("sent", "delivered"),
    ]
    assert any(e.source == "poll" and e.raw and "DELIVERED" in e.raw for e in events)


@pytest.mark.parametrize(
    ("last_digit", "expected"),
    [("9", Status.UNDELIVERED), ("8", Status.UNDELIVERED), ("0", Status.REJECTED)],
)
def test_sandbox_outcomes(stack, sims, last_digit: str, expected: Status) -> None:  # type: ignore[no-untyped-def]
    mid = send_sms("24385123456" + last_digit, unique_text("outcome"), provider="keccel")
    st = wait_status(mid, expected)
    if expected is Status.REJECTED:
        assert "rejected" in (st.error or "").lower()


def test_5xx_then_success_sends_once(stack, sims) -> None:  # type: ignore[no-untyped-def]
    text = unique_text("retry")
    sims["keccel"].add_fault(Fault(status=503, times=1))
    mid = send_sms("243851234561", text, provider="keccel")
    st = wait_status(mid, Status.DELIVERED)
    assert st.attempts == 2
    assert len(sim_messages(sims["keccel"], text)) == 1
    with db.session() as s:
        notes = [
            e.note or ""
            for e in s.exec(select(MessageEvent).where(MessageEvent.message_id == mid)).all()
        ]
    assert any("HTTP 503" in n for n in notes)


def test_429_with_retry_after_is_honoured_and_not_an_attempt(stack, sims) -> None:  # type: ignore[no-untyped-def]
    text = unique_text("throttled")
    sims["keccel"].add_fault(Fault(status=429, times=1, headers={"Retry-After": "2"}))
    started = time.monotonic()
    mid = send_sms("243851234562", text, provider="keccel")
    st = wait_status(mid, Status.SENT, Status.DELIVERED)
    waited = time.monotonic() - started
    assert waited >= 2.0  # Retry-After: 2 was honoured
    assert st.attempts == 1  # the 429 did not count as an attempt
    assert len(sim_messages(sims["keccel"], text)) == 1


def test_bad_token_fails_once_with_a_clear_error(stack, sims) -> None:  # type: ignore[no-untyped-def]
    sim = sims["keccel"]
    good = sim.credentials["token"]
    sim.credentials["token"] = "rotated-by-keccel"
    try:
        before = sim.request_count("/message.asp")
        mid = send_sms("243851234563", unique_text("badtoken"), provider="keccel")
        st = wait_status(mid, Status.FAILED)
    finally:
        sim.credentials["token"] = good
    assert st.attempts == 1
    assert "Invalid token" in (st.error or "")
    assert good not in (st.error or "")
    time.sleep(1.0)  # no retry may follow
    assert sim.request_count("/message.asp") == before + 1


def test_task_delivered_three_times_sends_once(stack, sims) -> None:  # type: ignore[no-untyped-def]
    text = unique_text("dup")
    mid = send_sms("243851234564", text, provider="keccel")
    publish_send([mid])
    publish_send([mid])
    wait_status(mid, Status.DELIVERED)
    time.sleep(1.0)
    assert len(sim_messages(sims["keccel"], text)) == 1
    with db.session() as s:
        row = s.get(Message, mid)
    assert row is not None and row.attempts == 1


def test_idempotency_key_sends_once(stack, sims) -> None:  # type: ignore[no-untyped-def]
    text = unique_text("idem")
    key = uuid.uuid4().hex
    first = send_sms("243851234565", text, provider="keccel", idempotency_key=key)
    second = send_sms("243851234565", text, provider="keccel", idempotency_key=key)
    assert first == second
    wait_status(first, Status.DELIVERED)
    assert len(sim_messages(sims["keccel"], text)) == 1


def test_row_left_queued_by_a_broker_outage_is_swept(stack, sims, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def broker_down(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ConnectionError("broker down")

    monkeypatch.setattr("producer.api.publish_send", broker_down)
    text = unique_text("swept")
    mid = send_sms("243851234566", text, provider="keccel")
    monkeypatch.undo()
    st = wait_status(mid, Status.DELIVERED)
    assert st.attempts == 1
    assert len(sim_messages(sims["keccel"], text)) == 1


def test_scheduled_send_waits_in_the_store_until_due(stack, sims) -> None:  # type: ignore[no-untyped-def]
    text = unique_text("later")
    when = datetime.now(UTC) + timedelta(seconds=3)
    mid = send_sms("243851234567", text, provider="keccel", send_at=when)
    time.sleep(1.0)
    assert wait_status(mid, Status.SCHEDULED, timeout=1).status == "scheduled"
    assert sim_messages(sims["keccel"], text) == []
    wait_status(mid, Status.DELIVERED, timeout=20)
    [sent] = sim_messages(sims["keccel"], text)
    assert datetime.fromtimestamp(sent.created, UTC) >= when


def _counts(stack) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    import redis

    from producer.queues import broker_url

    with db.session() as s:
        rows = s.exec(select(func.count()).select_from(Message)).one()
        events = s.exec(select(func.count()).select_from(MessageEvent)).one()
    queued = redis.Redis.from_url(broker_url()).llen("send")
    return rows, events, queued


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"to": "24385ABC4567", "text": "hi"}, "to"),
        ({"to": "243", "text": "hi"}, "to"),
        ({"to": "", "text": "hi"}, "to"),
        ({"to": "243851234567", "text": ""}, "text"),
        ({"to": "243851234567", "text": "x" * 2000}, "text"),
        ({"to": "243851234567", "text": "hi", "sender": "WAYTOOLONGNAME"}, "sender"),
        ({"to": "243851234567", "text": "hi", "sender": "<script>"}, "sender"),
        ({"to": "243851234567", "text": "hi", "provider": "twilio"}, "provider"),
        ({"to": "243851234567", "text": "hi", "send_at": "2001-01-01T00:00:00Z"}, "send_at"),
        ({"to": "243851234567", "text": "hi", "send_at": "tomorrow-ish"}, "send_at"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored_or_queued(stack, sims, kwargs, field) -> None:  # type: ignore[no-untyped-def]
    kwargs = {"provider": "keccel", **kwargs}
    before = _counts(stack)
    requests_before = len(sims["keccel"].requests)
    with pytest.raises(InvalidMessage) as info:
        send_sms(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert _counts(stack) == before
    assert len(sims["keccel"].requests) == requests_before


def test_bulk_with_one_bad_number_stores_nothing(stack, sims) -> None:  # type: ignore[no-untyped-def]
    before = _counts(stack)
    with pytest.raises(InvalidMessage) as info:
        send_bulk(["243851234561", "243851234562", "not-a-number"], "hi", provider="keccel")
    assert info.value.field == "to[2]"
    assert _counts(stack) == before


def test_smsclub_bulk_goes_in_one_request(stack, sims) -> None:  # type: ignore[no-untyped-def]
    text = unique_text("bulk")
    numbers = [f"3809893611{n:02d}" for n in range(11, 46)]
    before = sims["smsclub"].request_count("/sms/send")
    ids = send_bulk(numbers, text, provider="smsclub")
    for mid in ids:
        wait_status(mid, Status.DELIVERED, Status.UNDELIVERED, Status.EXPIRED, Status.REJECTED)
    assert sims["smsclub"].request_count("/sms/send") == before + 1
    assert len(sim_messages(sims["smsclub"], text)) == len([n for n in numbers if n[-1] != "0"])
