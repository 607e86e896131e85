"""SMSQ_RECIPIENT_LIMIT (issue 15, point 3): messages per number over every caller,
counted in a real Redis; past it MessageRefused and nothing stored."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlmodel import func, select

from producer import (
    LimitsUnavailable,
    MessageRefused,
    db,
    get_status,
    quotas,
    send_bulk,
    send_sms,
)
from producer import api as producer_api
from producer.models import Message
from producer.settings import Settings
from tests.unit.conftest import NO_BROKER, flush, isolate, restore

A, B = "243851234567", "243851234568"


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(
        producer_api, "publish_send", lambda ids, countdown=None, **_: calls.append(ids)
    )
    return calls


@pytest.fixture
def limited(
    monkeypatch: pytest.MonkeyPatch, tmp_path, real_redis: str, published: list[list[str]]
) -> Iterator[pytest.MonkeyPatch]:  # type: ignore[no-untyped-def]
    """A store of its own, the real Redis (flushed), the default limits."""
    flush(real_redis)
    isolate(monkeypatch, tmp_path, SMSQ_KECCEL_TOKEN="k", SMSQ_BROKER_URL=real_redis)
    yield monkeypatch
    restore(monkeypatch)


def with_limit(monkeypatch: pytest.MonkeyPatch, limit: str) -> None:
    from producer.settings import reload_settings

    monkeypatch.setenv("SMSQ_RECIPIENT_LIMIT", limit)
    reload_settings()


def stored() -> int:
    with db.session() as s:
        return s.exec(select(func.count()).select_from(Message)).one()


def test_the_default_is_ten_per_number_per_hour(limited, published) -> None:  # type: ignore[no-untyped-def]
    assert Settings().recipient_limit == "10/hour"
    for i in range(10):
        send_sms(A, f"message {i}")
    with pytest.raises(MessageRefused) as refused:
        send_sms(A, "the eleventh")
    assert A in refused.value.reason and "10 per 1 hour" in refused.value.reason
    assert refused.value.numbers == [A]
    assert 3000 < refused.value.retry_after <= 3600
    assert stored() == 10 and len(published) == 10
    send_sms(B, "another number still goes")
    assert stored() == 11


def test_a_repeated_idempotency_key_does_not_count_twice(limited) -> None:  # type: ignore[no-untyped-def]
    with_limit(limited, "2/hour")
    first = send_sms(A, "x", idempotency_key="order-1")
    assert send_sms(A, "x", idempotency_key="order-1") == first
    assert send_bulk([A], "x", idempotency_key="bulk-1") == send_bulk(
        [A], "x", idempotency_key="bulk-1"
    )
    with pytest.raises(MessageRefused):
        send_sms(A, "x", idempotency_key="order-2")
    assert stored() == 2


def test_a_bulk_call_with_a_number_past_the_limit_is_refused_whole(limited, published) -> None:  # type: ignore[no-untyped-def]
    with_limit(limited, "1/hour")
    send_sms(A, "first")
    with pytest.raises(MessageRefused) as refused:
        send_bulk([B, A], "bulk")
    assert refused.value.numbers == [A] and f"to: {A} reached" in str(refused.value)
    assert stored() == 1 and len(published) == 1
    send_sms(B, "B was not counted by the refused call")
    assert stored() == 2


def test_a_number_twice_in_one_bulk_counts_twice(limited) -> None:  # type: ignore[no-untyped-def]
    with_limit(limited, "2/hour")
    with pytest.raises(MessageRefused):
        send_bulk([A, A, A], "x")
    assert len(send_bulk([A, A], "x")) == 2


def test_off_disables_the_limit(limited) -> None:  # type: ignore[no-untyped-def]
    with_limit(limited, "off")
    for i in range(12):
        send_sms(A, f"m{i}")
    assert stored() == 12


def test_racing_sends_to_one_number_never_pass_the_limit(limited) -> None:  # type: ignore[no-untyped-def]
    """Threads as processes: 20 racing sends to one number under 5/hour store exactly 5."""
    with_limit(limited, "5/hour")
    outcomes: list[str] = []
    start = threading.Barrier(20)

    def one() -> None:
        start.wait()
        try:
            send_sms(A, "race")
            outcomes.append("sent")
        except MessageRefused:
            outcomes.append("refused")

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes.count("sent") == 5 and outcomes.count("refused") == 15
    assert stored() == 5


def test_counters_unreachable_python_sends_uncounted_strict_refuses(  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch, tmp_path, published, caplog
) -> None:
    isolate(monkeypatch, tmp_path, SMSQ_KECCEL_TOKEN="k", SMSQ_BROKER_URL=NO_BROKER)
    try:
        mid = send_sms(A, "kept for the sweep, like any send during a broker outage")
        assert get_status(mid) is not None  # type: ignore[union-attr]
        assert "recipient limit not counted" in caplog.text
        with pytest.raises(LimitsUnavailable, match="nothing was stored"):
            send_sms(B, "the web process asks for strict limits", strict_limits=True)
        assert stored() == 1
    finally:
        restore(monkeypatch)


@pytest.mark.parametrize("value", ["10/fortnight", "ten per hour", "10/hour;x"])
def test_a_bad_limit_setting_is_refused_naming_it(value: str) -> None:
    with pytest.raises(ValueError, match="SMSQ_RECIPIENT_LIMIT"):
        Settings(recipient_limit=value)


def test_retry_after_is_whole_seconds_and_never_zero() -> None:
    assert quotas.retry_after(100.2, 100.0) == 1
    assert quotas.retry_after(99.0, 100.0) == 1
    assert quotas.retry_after(160.01, 100.0) == 61


def test_parse_limit_reads_several_and_off() -> None:
    items = quotas.parse_limit("100/minute;20000/day", "X")
    assert [(i.amount, i.get_expiry()) for i in items] == [(100, 60), (20000, 86400)]
    assert quotas.parse_limit(" OFF ", "X") == [] and quotas.parse_limit("", "X") == []
    assert quotas.too_big(items, 101) is items[0] and quotas.too_big(items, 100) is None
