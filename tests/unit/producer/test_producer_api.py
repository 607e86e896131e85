"""producer.send_sms / send_bulk / get_status against a real SQLite store (no broker)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from kombu.exceptions import OperationalError
from sqlmodel import func, select

import producer
from producer import EnqueueError, InvalidMessage, db, get_status, send_bulk, send_sms
from producer import api as producer_api
from producer.limits import limits_for
from producer.models import Message, MessageEvent
from producer.settings import reload_settings

DRC = "243851234567"


@dataclass
class Recorder:
    calls: list[list[str]] = field(default_factory=list)
    priorities: list[str] = field(default_factory=list)
    error: Exception | None = None

    def __call__(self, ids, countdown=None, *, priority="normal") -> None:  # type: ignore[no-untyped-def]
        if self.error is not None:
            raise self.error
        self.calls.append(list(ids))
        self.priorities.append(priority)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for key in list(os.environ):
        if key.startswith("SMSQ_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SMSQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SMSQ_KECCEL_TOKEN", "x")
    monkeypatch.setenv("SMSQ_SMSCLUB_TOKEN", "y")
    monkeypatch.setenv("SMSQ_BROKER_URL", "redis://127.0.0.1:1/0")
    reload_settings()
    db.reset_engine()
    yield monkeypatch
    monkeypatch.undo()
    reload_settings()
    db.reset_engine()


@pytest.fixture
def published(store: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    store.setattr(producer_api, "publish_send", recorder)
    return recorder


def rows() -> list[Message]:
    with db.session() as s:
        return list(s.exec(select(Message)).all())


def count(model: type) -> int:
    with db.session() as s:
        return s.exec(select(func.count()).select_from(model)).one()


def as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------- happy paths


def test_send_stores_one_queued_row_and_publishes_it(published: Recorder) -> None:
    message_id = send_sms(DRC, "Hello World")
    assert isinstance(message_id, str) and message_id
    [row] = rows()
    assert row.id == message_id
    assert row.to == DRC
    assert row.text == "Hello World"
    assert row.status == "queued"
    assert row.encoding == "gsm7"
    assert row.segments == 1
    assert row.provider == "keccel"  # first configured
    assert row.send_at is None
    assert published.calls == [[message_id]]
    assert count(MessageEvent) == 1


def test_send_normalises_number_and_counts_ucs2_parts(published: Recorder) -> None:
    message_id = send_sms("+243 85 123 4567", "ж" * 71, provider="smsclub", sender="SMSQ")
    [row] = rows()
    assert row.id == message_id
    assert row.to == DRC
    assert (row.encoding, row.segments, row.provider, row.sender) == ("ucs2", 2, "smsclub", "SMSQ")
    assert published.calls == [[message_id]]


def test_idempotency_key_twice_same_id_one_row_one_publish(published: Recorder) -> None:
    first = send_sms(DRC, "Hello", idempotency_key="order-1")
    second = send_sms(DRC, "Hello", idempotency_key="order-1")
    assert first == second
    assert count(Message) == 1
    assert published.calls == [[first]]


def test_different_idempotency_keys_two_rows(published: Recorder) -> None:
    a = send_sms(DRC, "Hello", idempotency_key="a")
    b = send_sms(DRC, "Hello", idempotency_key="b")
    assert a != b
    assert count(Message) == 2
    assert published.calls == [[a], [b]]


def test_send_bulk_250_smsclub_numbers_three_batches(published: Recorder) -> None:
    numbers = [f"38050{i:07d}" for i in range(1000000, 1000250)]
    ids = send_bulk(numbers, "Promo", provider="smsclub")
    assert len(ids) == 250 == len(set(ids))
    assert count(Message) == 250
    assert len(published.calls) == 3
    assert all(len(c) <= limits_for("smsclub").max_batch for c in published.calls)
    assert [len(c) for c in published.calls] == [100, 100, 50]
    assert [i for c in published.calls for i in c] == ids
    assert {r.provider for r in rows()} == {"smsclub"}


def test_send_bulk_keccel_one_task_per_message(published: Recorder) -> None:
    ids = send_bulk([DRC, "243991234567"], "Hi")
    assert published.calls == [[ids[0]], [ids[1]]]


def test_send_bulk_idempotent(published: Recorder) -> None:
    numbers = [DRC, "243991234567", "243811234567"]
    first = send_bulk(numbers, "Hi", idempotency_key="batch")
    again = send_bulk(numbers, "Hi", idempotency_key="batch")
    assert first == again
    assert count(Message) == 3
    assert len(published.calls) == 3
    assert sorted(r.idempotency_key for r in rows()) == ["batch:0", "batch:1", "batch:2"]


def test_send_bulk_bad_number_at_index_2(published: Recorder) -> None:
    with pytest.raises(InvalidMessage) as info:
        send_bulk([DRC, "243991234567", "24385ABC4567", "243811234567"], "Hi")
    assert info.value.field == "to[2]"
    assert str(info.value).startswith("to[2]: ")
    assert count(Message) == 0
    assert count(MessageEvent) == 0
    assert published.calls == []


@pytest.mark.parametrize("to", ["243851234567", [], b"x", 5])
def test_send_bulk_to_must_be_a_non_empty_list(published: Recorder, to: object) -> None:
    with pytest.raises(InvalidMessage) as info:
        send_bulk(to, "Hi")  # type: ignore[arg-type]
    assert info.value.field == "to"
    assert count(Message) == 0
    assert published.calls == []


# ---------------------------------------------------------------- bad input


FUTURE = datetime.now(UTC) + timedelta(days=3650)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"to": "24385ABC4567"}, "to"),
        ({"to": "2438512"}, "to"),
        ({"to": None}, "to"),
        ({"text": ""}, "text"),
        ({"text": "   "}, "text"),
        ({"text": "a" * (limits_for("keccel").max_text + 1)}, "text"),
        ({"text": "ж" * 400}, "text"),  # 6 UCS-2 parts, keccel takes 5
        ({"text": "a\x00b"}, "text"),
        ({"sender": "ABCDEFGHIJKL"}, "sender"),
        ({"sender": "Café"}, "sender"),
        ({"provider": "twilio"}, "provider"),
        ({"provider": "kingsms"}, "provider"),  # known but not configured
        ({"send_at": datetime.now(UTC) - timedelta(minutes=1)}, "send_at"),
        ({"send_at": "not a date"}, "send_at"),
        ({"flash": True}, "flash"),  # keccel cannot flash
        ({"flash": "yes"}, "flash"),
        ({"callback_url": "ftp://x"}, "callback_url"),
        ({"idempotency_key": ""}, "idempotency_key"),
    ],
)
def test_bad_input_nothing_stored_nothing_published(
    published: Recorder, kwargs: dict, field: str
) -> None:
    args = {"to": DRC, "text": "Hello", **kwargs}
    with pytest.raises(InvalidMessage) as info:
        send_sms(**args)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert count(Message) == 0
    assert count(MessageEvent) == 0
    assert published.calls == []
    # the same mistake in a bulk call
    bulk = {**args, "to": [DRC, args["to"]]}
    with pytest.raises(InvalidMessage) as info:
        send_bulk(**bulk)
    assert info.value.field in {field, "to[1]"}
    assert count(Message) == 0
    assert published.calls == []


def test_no_provider_configured(published: Recorder, store: pytest.MonkeyPatch) -> None:
    store.delenv("SMSQ_KECCEL_TOKEN")
    store.delenv("SMSQ_SMSCLUB_TOKEN")
    reload_settings()
    with pytest.raises(InvalidMessage) as info:
        send_sms(DRC, "Hello")
    assert info.value.field == "provider"
    assert count(Message) == 0
    assert published.calls == []


# ---------------------------------------------------------------- scheduling


def test_send_at_future_is_scheduled_and_not_published(published: Recorder) -> None:
    when = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    message_id = send_sms(DRC, "Later", send_at=when)
    [row] = rows()
    assert row.id == message_id
    assert row.status == "scheduled"
    assert row.send_at is not None and as_utc(row.send_at) == when
    assert published.calls == []
    st = get_status(message_id)
    assert st is not None and st.status == "scheduled"


def test_send_at_iso_string(published: Recorder) -> None:
    message_id = send_sms(DRC, "Later", send_at="2999-01-01T10:00:00Z")
    st = get_status(message_id)
    assert st is not None and st.send_at is not None
    assert as_utc(st.send_at) == datetime(2999, 1, 1, 10, tzinfo=UTC)
    assert published.calls == []


# ---------------------------------------------------------------- broker down


@pytest.mark.parametrize(
    "error", [OperationalError("Error 111 connecting"), ConnectionError("refused")]
)
def test_broker_down_keeps_row_for_sweep(published: Recorder, error: Exception) -> None:
    published.error = error
    before = datetime.now(UTC)
    message_id = send_sms(DRC, "Hello")
    after = datetime.now(UTC)
    [row] = rows()
    assert row.id == message_id
    assert row.status == "queued"
    assert row.next_attempt_at is not None
    assert before <= as_utc(row.next_attempt_at) <= after
    kinds = sorted(e.kind for e in _events(message_id))
    assert kinds == ["retry", "status"]


def test_broker_down_bulk_keeps_every_row(published: Recorder) -> None:
    published.error = OperationalError("down")
    ids = send_bulk([DRC, "243991234567"], "Hello")
    assert {r.id for r in rows()} == set(ids)
    now = datetime.now(UTC)
    assert all(as_utc(r.next_attempt_at) <= now for r in rows())  # type: ignore[arg-type]


def test_broker_down_with_raise_policy_leaves_nothing(
    published: Recorder, store: pytest.MonkeyPatch
) -> None:
    store.setenv("SMSQ_ENQUEUE_FAILURE", "raise")
    reload_settings()
    published.error = OperationalError("down")
    with pytest.raises(EnqueueError) as info:
        send_sms(DRC, "Hello")
    assert isinstance(info.value.__cause__, OperationalError)
    assert count(Message) == 0
    assert count(MessageEvent) == 0


def test_broker_down_with_raise_policy_then_retry_succeeds(
    published: Recorder, store: pytest.MonkeyPatch
) -> None:
    store.setenv("SMSQ_ENQUEUE_FAILURE", "raise")
    reload_settings()
    published.error = ConnectionError("down")
    with pytest.raises(EnqueueError):
        send_sms(DRC, "Hello", idempotency_key="k1")
    published.error = None
    message_id = send_sms(DRC, "Hello", idempotency_key="k1")
    assert count(Message) == 1
    assert published.calls == [[message_id]]


def _events(message_id: str) -> list[MessageEvent]:
    with db.session() as s:
        return list(s.exec(select(MessageEvent).where(MessageEvent.message_id == message_id)))


# ---------------------------------------------------------------- get_status


def test_get_status_fields(published: Recorder) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    message_id = send_sms("00243851234567", "Hi €", provider="smsclub", sender="Shop")
    st = get_status(message_id)
    assert isinstance(st, producer.MessageStatus)
    assert st.id == message_id
    assert st.status == "queued"
    assert st.provider == "smsclub"
    assert st.provider_message_id is None
    assert st.to == DRC
    assert st.text == "Hi €"
    assert st.sender == "Shop"
    assert st.encoding == "gsm7"
    assert st.segments == 1
    assert st.attempts == 0
    assert st.error is None
    assert st.note is None
    assert st.send_at is None
    assert st.sent_at is None
    assert before <= as_utc(st.created_at) <= datetime.now(UTC)
    assert as_utc(st.updated_at) >= as_utc(st.created_at)
    d = st.to_dict()
    assert d["id"] == message_id and d["status"] == "queued"
    assert isinstance(d["created_at"], str)
    # id with surrounding spaces is found too
    assert get_status(f" {message_id} ") == st


def test_get_status_unknown_is_none(store: pytest.MonkeyPatch) -> None:
    assert get_status("unknown") is None


@pytest.mark.parametrize("bad", ["", "  ", None, 12])
def test_get_status_bad_id(store: pytest.MonkeyPatch, bad: object) -> None:
    with pytest.raises(InvalidMessage) as info:
        get_status(bad)  # type: ignore[arg-type]
    assert info.value.field == "id"


# ---------------------------------------------------------------- partial broker failure


def _fail_second_publish(published: Recorder, store: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}

    def publish(ids, countdown=None, **_) -> None:  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("down")
        published.calls.append(list(ids))

    store.setattr(producer_api, "publish_send", publish)
    store.setenv("SMSQ_ENQUEUE_FAILURE", "raise")
    reload_settings()


UKRAINE_250 = [f"38050{i:07d}" for i in range(1000000, 1000250)]


def test_bulk_partial_broker_failure_with_raise_policy_keeps_only_what_was_queued(
    published: Recorder, store: pytest.MonkeyPatch
) -> None:
    _fail_second_publish(published, store)
    with pytest.raises(EnqueueError) as info:
        send_bulk(UKRAINE_250, "Promo", provider="smsclub")
    assert "did not take 100 of 250" in str(info.value)
    assert "150 were queued" in str(info.value)
    assert len(info.value.queued_ids) == 150
    assert count(Message) == 150


def test_bulk_retry_after_partial_failure_with_same_key(
    published: Recorder, store: pytest.MonkeyPatch
) -> None:
    _fail_second_publish(published, store)
    with pytest.raises(EnqueueError):
        send_bulk(UKRAINE_250, "Promo", provider="smsclub", idempotency_key="promo")
    store.setattr(producer_api, "publish_send", published)
    ids = send_bulk(UKRAINE_250, "Promo", provider="smsclub", idempotency_key="promo")
    assert len(ids) == 250
    assert count(Message) == 250


def test_bulk_key_matching_an_existing_key_returns_that_message(published: Recorder) -> None:
    first = send_sms(DRC, "Hello", idempotency_key="c:0")
    ids = send_bulk([DRC, "243991234567"], "Hello", idempotency_key="c")
    assert ids[0] == first
    assert count(Message) == 2


def test_a_cancel_takes_the_one_road_event_metric_and_app_callback(
    published: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel is a status change like any other (`worker.store.transitions.move`):
    it is counted in `smsq_messages_total` and queues the app's status callback."""
    import fakeredis

    from producer.models import AppNotification
    from worker import redis_client
    from worker.ops import metrics

    fake = fakeredis.FakeRedis()
    monkeypatch.setattr(redis_client, "shared", lambda: fake)
    mid = send_sms(DRC, "cancel me", provider="keccel", callback_url="https://app.example/cb")
    st = producer_api.cancel(mid)
    assert (st.status, st.error) == ("failed", "cancelled")
    metrics.flush()
    counted = {k.decode(): int(v) for k, v in fake.hgetall(metrics.HASH).items()}
    assert counted.get("smsq_messages|keccel|failed") == 1
    with db.session() as s:
        [note] = s.exec(select(AppNotification).where(AppNotification.message_id == mid)).all()
        [event] = s.exec(
            select(MessageEvent).where(
                MessageEvent.message_id == mid, MessageEvent.new_status == "failed"
            )
        ).all()
    assert note.url == "https://app.example/cb" and '"status": "failed"' in note.payload
    assert (event.old_status, event.note, event.source) == ("queued", "cancelled", "producer")
    with pytest.raises(InvalidMessage, match="only scheduled or queued"):
        producer_api.cancel(mid)  # final now: nothing changes, nothing is counted again
    metrics.flush()
    assert int(fake.hget(metrics.HASH, "smsq_messages|keccel|failed") or 0) == 1


def test_a_cancel_never_touches_a_message_a_worker_has_claimed(published: Recorder) -> None:
    from producer.status import Status

    mid = send_sms(DRC, "claimed", provider="keccel")
    with db.session() as s:
        row = s.get(Message, mid)
        assert row is not None
        row.status = Status.SENDING.value
        s.add(row)
        s.commit()
    with pytest.raises(InvalidMessage, match="message is sending"):
        producer_api.cancel(mid)
    assert get_status(mid).status == "sending"  # type: ignore[union-attr]
