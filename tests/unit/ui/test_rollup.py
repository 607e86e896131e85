"""The dashboard's summary table: kept from the events past a watermark, each event
counted once, however many roll-ups race (SQLite and a real PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from producer import api as producer_api
from producer import db, send_sms
from producer.models import Message, MessageEvent, UiRollup, UiStat, utcnow
from producer.status import Status
from tests.pg import EmbeddedPostgres
from tests.unit.conftest import isolate, restore
from worker.store.transitions import move, record_event
from worker.ui import queries, rollup, stats

NOW = timedelta(0)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    isolate(monkeypatch, tmp_path, SMSQ_KECCEL_TOKEN="k", SMSQ_SMSCLUB_TOKEN="c")
    monkeypatch.setattr(producer_api, "publish_send", lambda *args, **kwargs: None)
    yield
    restore(monkeypatch)


@pytest.fixture
def pg_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, postgres: EmbeddedPostgres):  # type: ignore[no-untyped-def]
    isolate(
        monkeypatch,
        tmp_path,
        SMSQ_DATABASE_URL=postgres.database(),
        SMSQ_KECCEL_TOKEN="k",
        SMSQ_SMSCLUB_TOKEN="c",
    )
    monkeypatch.setattr(producer_api, "publish_send", lambda *args, **kwargs: None)
    assert db.get_engine().dialect.name == "postgresql"
    yield
    restore(monkeypatch)


def deliver(mid: str, final: Status = Status.DELIVERED) -> None:
    """The road a real send takes: claimed, sent, then its final status."""
    with db.session() as s:
        row = s.get(Message, mid)
        assert row is not None
        move(s, row, Status.SENDING, source="worker")
        move(s, row, Status.SENT, source="worker", sent_at=utcnow())
        move(s, row, final, source="poll")
        s.commit()


def cells() -> dict[tuple[int, str, str], int]:
    with db.session() as s:
        keys = (UiStat.width, UiStat.provider, UiStat.status)
        rows = s.exec(select(*keys, func.sum(UiStat.count)).group_by(*keys)).all()
    return {(w, p, st): int(n) for w, p, st, n in rows}


def stored_events() -> int:
    with db.session() as s:
        return int(s.exec(select(func.count()).select_from(MessageEvent)).one())


def test_roll_up_counts_each_status_change_once(store: None) -> None:
    ids = [send_sms("243851234567", f"m{i}", provider="keccel") for i in range(5)]
    long = send_sms("380989361131", "x" * 200, provider="smsclub")  # two segments
    for mid in ids[:3]:
        deliver(mid)
    deliver(ids[3], Status.UNDELIVERED)
    deliver(long)
    with db.session() as s:
        record_event(s, ids[4], source="beat", kind="reconcile", provider="keccel", note="x")
        s.commit()

    done = rollup.run(lag=NOW)
    assert done.events > 0 and done.watermark > 0
    for width in stats.WIDTHS:
        got = {k[1:]: n for k, n in cells().items() if k[0] == width}
        assert got == {
            ("keccel", "sent"): 4,
            ("keccel", "delivered"): 3,
            ("keccel", "undelivered"): 1,
            ("keccel", "uncertain"): 1,
            ("smsclub", "sent"): 1,
            ("smsclub", "delivered"): 1,
        }
    assert rollup.run(lag=NOW).events == 0  # nothing new: nothing counted again
    deliver(ids[4], Status.FAILED)
    rollup.run(lag=NOW)
    assert cells()[(3600, "keccel", "failed")] == 1
    assert cells()[(3600, "keccel", "sent")] == 5

    day = {g.provider: g for g in queries.window_stats("day")}
    assert day["keccel"].totals["delivered"] == 3
    assert day["keccel"].ratio == pytest.approx(3 / 5)
    assert day["smsclub"].p50 is not None and day["smsclub"].p50 < 1
    with db.session() as s:
        segments = s.exec(
            select(func.sum(UiStat.segments)).where(
                UiStat.width == 3600, UiStat.provider == "smsclub", UiStat.status == "sent"
            )
        ).one()
    assert segments == 2


def test_events_younger_than_the_lag_wait_for_the_next_run(store: None) -> None:
    mid = send_sms("243851234567", "hi", provider="keccel")
    deliver(mid)
    assert rollup.run(lag=timedelta(minutes=5)).events == 0
    assert cells() == {}
    assert rollup.run(lag=NOW).events == stored_events()  # queued, sending, sent, ...
    assert rollup.status()["behind"] == 0


def test_a_batch_lost_to_another_roll_up_writes_nothing(store: None, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The watermark moves first, conditionally: the loser of a race rolls back."""
    deliver(send_sms("243851234567", "hi", provider="keccel"))
    original = rollup._watermark

    def read_then_lose(s):  # type: ignore[no-untyped-def]
        mark = original(s)
        with db.session() as other:  # another roll-up takes the batch meanwhile
            row = other.get(UiRollup, rollup.NAME)
            assert row is not None
            row.last_event_id = mark + 1
            other.add(row)
            other.commit()
        return mark

    def no_facts(s, events):  # type: ignore[no-untyped-def]
        raise AssertionError("the loser must stop before counting")

    monkeypatch.setattr(rollup, "_watermark", read_then_lose)
    monkeypatch.setattr(rollup, "_facts", no_facts)
    assert rollup.roll_batch(lag=NOW)[0] == 0
    assert cells() == {}


def racing_roll_ups(n_messages: int, threads: int = 4) -> None:
    ids = [send_sms("243851234567", f"r{i}", provider="keccel") for i in range(n_messages)]
    for mid in ids:
        deliver(mid)
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def roll() -> None:
        try:
            start.wait()
            for _ in range(50):
                rollup.run(batch=7, budget=5.0, lag=NOW)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=roll) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    rollup.run(lag=NOW)
    got = cells()
    for width in stats.WIDTHS:
        assert got[(width, "keccel", "sent")] == n_messages
        assert got[(width, "keccel", "delivered")] == n_messages
    with db.session() as s:
        state = s.get(UiRollup, rollup.NAME)
        assert state is not None and state.events == stored_events()  # each read once


def test_racing_roll_ups_count_every_event_once_on_sqlite(store: None) -> None:
    racing_roll_ups(40)


def test_racing_roll_ups_count_every_event_once_on_postgres(pg_store: None) -> None:
    racing_roll_ups(40)


def test_old_buckets_are_pruned(store: None) -> None:
    now = utcnow()
    old = int((now - timedelta(days=3)).timestamp())
    with db.session() as s:
        s.add(UiStat(width=300, bucket=old, provider="keccel", status="sent", count=1))
        s.add(UiStat(width=3600, bucket=old, provider="keccel", status="sent", count=1))
        s.commit()
    rollup.prune(now)
    assert cells() == {(3600, "keccel", "sent"): 1}  # hourly kept 90 days, 5-minute 2
