"""The message store on a real PostgreSQL (the embedded server of tests/pg.py).

Everything else in tests/unit runs on SQLite, where one writer at a time holds
the whole database; PostgreSQL locks rows, so the races here (claims, moves,
leases, alert states, idempotency keys, migrations) are the ones that only a
shared PostgreSQL store meets. Each test has a new empty database; the server's
own time zone is +05:30, so a time not kept as aware UTC shows up.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlmodel import SQLModel, func, select

import producer.models  # noqa: F401  (registers every table)
from producer import EnqueueError, InvalidMessage, db, get_status, send_bulk, send_sms
from producer import api as producer_api
from producer.api import cancel, message_events
from producer.models import (
    AlertState,
    AppNotification,
    BalanceSnapshot,
    Message,
    MessageEvent,
    utcnow,
)
from producer.settings import reload_settings
from producer.status import Status
from tests.alert_helpers import WebhookServer
from tests.pg import SERVER_TIMEZONE, EmbeddedPostgres
from tests.unit.balance import test_alerts_delivery as alert_tests
from tests.unit.balance.test_alerts_delivery import account, deliveries, stored_alerts
from tests.unit.conftest import isolate, restore
from worker.balance import alerts
from worker.balance.checks import check_all
from worker.balance.rules import KINDS
from worker.gateways.base import OutgoingMessage, SendResult
from worker.gateways.sandbox.server import RunningSandbox
from worker.resilience import sweeps as maintenance
from worker.sending import send as sending
from worker.sending.cancel import cancel_message
from worker.store.transitions import move
from worker.tracking import notify

# test_alerts_delivery's fixtures: the sandbox, an embedded Redis, its `env`, a webhook.
sandbox, redis_url, env, webhook = (
    alert_tests.sandbox,
    alert_tests.redis_url,
    alert_tests.env,
    alert_tests.webhook,
)

DRC = "243851234567"
UKRAINE = "380989361131"


@pytest.fixture
def pg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, postgres: EmbeddedPostgres
) -> Iterator[str]:
    """A clean SMSQ_* environment (no broker) whose store is a new PostgreSQL database."""
    url = postgres.database()
    isolate(
        monkeypatch,
        tmp_path,
        SMSQ_DATABASE_URL=url,
        SMSQ_KECCEL_TOKEN="k",
        SMSQ_SMSCLUB_TOKEN="c",
    )
    assert db.get_engine().dialect.name == "postgresql"
    yield url
    restore(monkeypatch)


@pytest.fixture
def published(pg: str, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(producer_api, "publish_send", lambda ids, **_: calls.append(list(ids)))
    return calls


def race(workers: int, job: Callable[[int], Any]) -> list[Any]:
    """Run `job(i)` in `workers` threads released together; their results in order.
    Any exception in a thread fails the test."""
    start = threading.Barrier(workers)
    results: list[Any] = [None] * workers
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = job(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [], errors
    return results


def add_rows(n: int, **values: Any) -> list[str]:
    now = utcnow()
    rows = [
        Message(to=DRC, text=f"m{i}", provider="keccel", created_at=now, updated_at=now, **values)
        for i in range(n)
    ]
    with db.session() as s:
        s.add_all(rows)
        s.commit()
    return [r.id for r in rows]


def statuses(ids: Sequence[str]) -> Counter[str]:
    with db.session() as s:
        return Counter(s.exec(select(Message.status).where(Message.id.in_(ids))).all())  # type: ignore[union-attr]


def head() -> str:
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


# ---------------------------------------------------------------- schema


def test_migrations_on_an_empty_database_reach_head_and_match_the_models(pg: str) -> None:
    engine = db.get_engine()  # `alembic upgrade head` under the advisory lock
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == head()
        assert compare_metadata(context, SQLModel.metadata) == []
        time_types = set(
            conn.execute(
                text(
                    "SELECT DISTINCT data_type FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND column_name LIKE '%\\_at'"
                )
            ).scalars()
        )
    assert time_types == {"timestamp with time zone"}


def test_migrations_go_down_to_base_and_up_again(pg: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    engine = db.get_engine()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    with engine.connect() as conn:
        tables = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars()
        assert set(tables) == {"alembic_version"}
    db.reset_engine()
    with db.get_engine().connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == head()
        assert compare_metadata(context, SQLModel.metadata) == []


MIGRATE = """
import sys
from producer import db
print("ready", flush=True)
sys.stdin.readline()  # released together
db.get_engine()
print("migrated", flush=True)
"""


def test_processes_migrating_an_empty_database_at_once_all_succeed(
    postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    """Three processes as on three hosts (each its own data dir, so the host's file
    lock does not order them) bring one empty database up at the same moment: the
    advisory lock lets one migrate, the others then find it at head."""
    url = postgres.database()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")}
    procs = []
    for i in range(3):
        data_dir = tmp_path / f"host{i}"
        data_dir.mkdir()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", MIGRATE],
                env={**clean, "SMSQ_DATABASE_URL": url, "SMSQ_DATA_DIR": str(data_dir)},
                cwd=data_dir,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in results]
    assert all(out.strip() == "migrated" for out, _ in results)
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn)
            assert context.get_current_revision() == head()
            assert compare_metadata(context, SQLModel.metadata) == []
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()


# ---------------------------------------------------------------- producer


def test_send_sms_send_bulk_status_and_cancel(published: list[list[str]]) -> None:
    one = send_sms(DRC, "Your code is 4711", provider="keccel", sender="SHOP")
    many = send_bulk([f"38098936{i:04d}" for i in range(250)], "Sale today", provider="smsclub")
    assert len(many) == 250 and len(set(many)) == 250
    assert [len(c) for c in published] == [1, 100, 100, 50]  # SMSClub: 100 numbers a request
    st = get_status(one)
    assert st is not None and st.status == "queued" and st.provider == "keccel"
    assert st.sender == "SHOP" and st.segments == 1 and st.attempts == 0
    assert [e["new_status"] for e in message_events(one)] == ["queued"]
    with db.session() as s:
        assert s.exec(select(func.count()).select_from(Message)).one() == 251
        assert s.exec(select(func.count()).select_from(MessageEvent)).one() == 251
    assert cancel(one).status == "failed"
    with pytest.raises(InvalidMessage):
        cancel(one)  # final now
    assert get_status("0" * 32) is None


def test_dead_broker_keeps_the_row_for_the_sweep_or_stores_nothing(
    pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = send_sms(DRC, "kept")  # nothing listens at the broker URL
    st = get_status(kept)
    assert st is not None and st.status == "queued"
    assert [e["kind"] for e in message_events(kept)] == ["status", "retry"]
    monkeypatch.setenv("SMSQ_ENQUEUE_FAILURE", "raise")
    reload_settings()
    with pytest.raises(EnqueueError):
        send_bulk([DRC, UKRAINE], "refused", provider="keccel")
    with db.session() as s:
        assert s.exec(select(func.count()).select_from(Message)).one() == 1
        assert s.exec(select(func.count()).select_from(MessageEvent)).one() == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [("idempotency_key", "order\x0042"), ("callback_url", "https://app.example/cb\x00")],
)
def test_a_nul_character_is_refused_before_the_store(
    published: list[list[str]], field: str, value: str
) -> None:
    """A PostgreSQL text column cannot hold NUL: refused like any bad input, nothing stored."""
    with pytest.raises(InvalidMessage) as info:
        send_sms(DRC, "hi", **{field: value})
    assert info.value.field == field and "NUL" in str(info.value)
    with db.session() as s:
        assert s.exec(select(func.count()).select_from(Message)).one() == 0


def test_an_id_with_a_nul_character_is_unknown(pg: str) -> None:
    assert get_status("ab\x00cd") is None
    with pytest.raises(InvalidMessage, match="no message"):
        cancel("ab\x00cd")
    with pytest.raises(InvalidMessage, match="no message"):
        cancel_message("ab\x00cd")


def test_aware_times_round_trip_as_utc(published: list[list[str]]) -> None:
    """Stored as timestamptz, read back as aware UTC whatever the zone they were given in
    and whatever the server's own zone (+05:30 here)."""
    with db.get_engine().connect() as conn:
        assert conn.execute(text("SHOW timezone")).scalar() == SERVER_TIMEZONE
    minus_three = timezone(timedelta(hours=-3))
    at = datetime(2031, 5, 17, 6, 30, 15, 123456, tzinfo=minus_three)
    mid = send_sms(DRC, "later", send_at=at)
    st = get_status(mid)
    assert st is not None and st.status == "scheduled"
    assert st.send_at == at and st.send_at.utcoffset() == timedelta(0)
    assert st.send_at.isoformat() == "2031-05-17T09:30:15.123456+00:00"
    assert abs(st.created_at - datetime.now(UTC)) < timedelta(seconds=30)
    assert st.created_at.tzinfo is not None and st.created_at.utcoffset() == timedelta(0)
    with db.get_engine().connect() as conn:
        stored = conn.execute(
            text(
                "SELECT to_char(send_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') "
                "FROM messages WHERE id = :id"
            ),
            {"id": mid},
        ).scalar()
    assert stored == "2031-05-17 09:30:15.123456"
    # A comparison in SQL against an aware bound value is an instant, not a wall time.
    with db.session() as s:
        found = s.exec(
            select(Message.id).where(
                Message.send_at
                == datetime(
                    2031,
                    5,
                    17,
                    15,
                    0,
                    15,
                    123456,
                    tzinfo=timezone(  # type: ignore[arg-type]
                        timedelta(hours=5, minutes=30)
                    ),
                )
            )
        ).all()
    assert found == [mid]


def test_a_scheduled_row_is_released_by_its_instant_not_by_a_wall_clock(pg: str) -> None:
    """Due a second ago: released. Due in an hour (less than the server's +05:30): not."""
    now = utcnow()
    [due] = add_rows(1, status="scheduled", send_at=now - timedelta(seconds=1))
    [later] = add_rows(1, status="scheduled", send_at=now + timedelta(hours=1))
    assert maintenance._release_scheduled() == 1
    assert statuses([due, later]) == Counter({"queued": 1, "scheduled": 1})
    assert get_status(due).status == "queued"  # type: ignore[union-attr]


def test_one_idempotency_key_sent_at_once_from_many_threads_is_one_row(
    published: list[list[str]],
) -> None:
    ids = race(8, lambda i: send_sms(DRC, "once", idempotency_key="order-42"))
    assert len(set(ids)) == 1
    bulks = race(
        4, lambda i: send_bulk([f"38098936{n:04d}" for n in range(30)], "x", idempotency_key="b")
    )
    assert all(b == bulks[0] for b in bulks) and len(set(bulks[0])) == 30
    with db.session() as s:
        assert s.exec(select(func.count()).select_from(Message)).one() == 31
    assert sum(len(c) for c in published) == 31  # each row queued once


def test_idempotency_keys_are_per_owner_on_postgres(published: list[list[str]]) -> None:
    """No owner (Python calls) is stored as '', so a key without owner is unique too:
    PostgreSQL never finds two NULLs equal."""
    plain = race(4, lambda i: send_sms(DRC, "once", idempotency_key="order-7"))
    owned = race(4, lambda i: send_sms(DRC, "once", idempotency_key="order-7", owner="shop"))
    other = send_sms(DRC, "once", idempotency_key="order-7", owner="bank")
    assert len(set(plain)) == 1 and len(set(owned)) == 1
    assert len({plain[0], owned[0], other}) == 3
    assert get_status(owned[0]).owner == "shop" and get_status(plain[0]).owner is None  # type: ignore[union-attr]
    with db.session() as s:
        assert s.exec(select(func.count()).select_from(Message)).one() == 3


# ---------------------------------------------------------------- worker


class CountingGateway:
    """A fake adapter that accepts everything and counts each message it is given."""

    duplicate_window_seconds = None

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self._lock = threading.Lock()

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        with self._lock:
            self.sent.update(m.ref for m in batch)
        return [SendResult(m.ref, Status.SENT, f"gw-{m.ref}") for m in batch]


def test_workers_racing_for_the_same_rows_send_each_exactly_once(
    pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight worker threads each get every row (a redelivered task, a sweep, a
    duplicate), in its own order, in batches: each row is claimed once, sent once."""
    gateway = CountingGateway()
    monkeypatch.setattr(sending, "get_adapter", lambda name: gateway)
    ids = add_rows(120, next_attempt_at=utcnow())
    requeued: list[list[str]] = []

    def work(i: int) -> int:
        mine = ids[:]
        random.Random(i).shuffle(mine)
        claimed = 0
        for start in range(0, len(mine), 15):
            outcome = sending.send_messages(
                mine[start : start + 15], lambda r, c, _t=None: requeued.append(r)
            )
            claimed += outcome.claimed
        return claimed

    claimed = race(8, work)
    assert sum(claimed) == len(ids)
    assert gateway.sent == Counter({i: 1 for i in ids})
    assert requeued == []
    with db.session() as s:
        rows = s.exec(select(Message).where(Message.id.in_(ids))).all()  # type: ignore[union-attr]
        claims = s.exec(
            select(MessageEvent.message_id).where(MessageEvent.note == "claimed for sending")
        ).all()
    assert {(r.status, r.attempts) for r in rows} == {("sent", 1)}
    assert all(r.provider_message_id == f"gw-{r.id}" for r in rows)
    assert Counter(claims) == Counter({i: 1 for i in ids})


def test_a_claim_of_one_row_skips_the_lock_in_id_order(pg: str) -> None:
    """Several rows are locked first, in id order (two overlapping claims must not each
    hold a row the other waits for); a claim of one row holds nothing while it waits,
    so its UPDATE alone claims it: a single send saves that round trip."""
    from worker.store.transitions import claim_many

    ids = add_rows(4)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = db.get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        with db.session() as s:
            one = claim_many(s, ids[:1], utcnow(), "a" * 32)
            s.commit()
        alone = statements[:]
        statements.clear()
        with db.session() as s:
            several = claim_many(s, ids[1:], utcnow(), "b" * 32)
            s.commit()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert [r.id for r in one] == ids[:1] and [r.id for r in several] == ids[1:]
    assert not any("FOR UPDATE" in x for x in alone)
    assert sum("FOR UPDATE" in x for x in statements) == 1
    assert statuses(ids) == Counter({"sending": 4})


def test_workers_and_ticks_racing_on_a_distant_store_never_deadlock(
    pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker threads claim overlapping batches of every size in their own orders while
    two beat ticks lease the same due rows, each statement 1 ms away (a store on
    another host): no deadlock, every row claimed once and sent once."""
    monkeypatch.setenv("SMSQ_SWEEP_AFTER_SECONDS", "0.001")  # leased rows stay due
    reload_settings()
    gateway = CountingGateway()
    monkeypatch.setattr(sending, "get_adapter", lambda name: gateway)
    now = utcnow()
    ids = add_rows(1, next_attempt_at=now)
    for _ in range(239):  # due at distinct past times: due order is not id order
        ids += add_rows(1, next_attempt_at=now - timedelta(seconds=random.random() * 100))
    engine = db.get_engine()

    def latency(*args: Any) -> None:
        time.sleep(0.001)

    event.listen(engine, "before_cursor_execute", latency)
    done = threading.Event()
    lock = threading.Lock()
    finished: list[int] = []
    leased: list[str] = []

    def work(i: int) -> int:
        if i < 2:  # beat
            while not done.is_set():
                maintenance.tick(lambda b, **_: leased.extend(b), lambda p, b: None)
            return 0
        mine = ids[:]
        rnd = random.Random(i)
        rnd.shuffle(mine)
        claimed = start = 0
        try:
            while start < len(mine):
                size = rnd.choice([1, 5, 20, 60])
                outcome = sending.send_messages(mine[start : start + size], lambda r, c: None)
                claimed += outcome.claimed
                start += size
        finally:
            with lock:
                finished.append(i)
                if len(finished) == 6:
                    done.set()
        return claimed

    try:
        claimed = race(8, work)
    finally:
        event.remove(engine, "before_cursor_execute", latency)
    assert sum(claimed) == len(ids)
    assert gateway.sent == Counter({i: 1 for i in ids})
    assert statuses(ids) == Counter({"sent": len(ids)})
    assert len(leased) > len(ids)  # the ticks did lease the rows, again and again


def test_racing_reports_move_a_row_once(pg: str) -> None:
    """Six final reports for one sent row at once (polls and pushes): one applies, the
    others are kept as not applied, and the row never moves twice."""
    ids = add_rows(20, status="sent", provider_message_id=None)
    finals = [Status.DELIVERED, Status.UNDELIVERED, Status.EXPIRED] * 2

    def report(i: int) -> int:
        applied = 0
        for mid in ids:
            with db.session() as s:
                row = s.get(Message, mid)
                assert row is not None
                applied += move(s, row, finals[i], source="poll", note=f"reporter {i}")
                s.commit()
        return applied

    assert sum(race(6, report)) == len(ids)
    with db.session() as s:
        events = s.exec(select(MessageEvent).where(MessageEvent.message_id.in_(ids))).all()  # type: ignore[union-attr]
        rows = {r.id: r for r in s.exec(select(Message).where(Message.id.in_(ids))).all()}  # type: ignore[union-attr]
    for mid in ids:
        mine = [e for e in events if e.message_id == mid]
        [won] = [e for e in mine if e.applied]
        assert won.old_status == "sent" and won.new_status == rows[mid].status
        assert len(mine) == 6  # five kept, not applied


def test_racing_ticks_lease_each_due_row_once(pg: str) -> None:
    """Beat ticks on several hosts at once: every due send and due poll is queued once."""
    now = utcnow()
    sends = add_rows(150, next_attempt_at=now - timedelta(seconds=1))
    polls = add_rows(
        150, status="sent", provider_message_id="p", next_poll_at=now - timedelta(seconds=1)
    )
    add_rows(10, next_attempt_at=now + timedelta(hours=1))  # not due (less than +05:30)
    queued: list[str] = []
    lock = threading.Lock()

    def queue_send(ids: Sequence[str], **_: object) -> None:
        with lock:
            queued.extend(ids)

    def queue_poll(provider: str, ids: Sequence[str]) -> None:
        with lock:
            queued.extend(ids)

    race(6, lambda i: maintenance.tick(queue_send, queue_poll))
    assert Counter(queued) == Counter({i: 1 for i in sends + polls})


def test_racing_ticks_queue_each_app_notification_once(pg: str) -> None:
    [mid] = add_rows(1)
    now = utcnow()
    with db.session() as s:
        notes = [
            AppNotification(
                message_id=mid, url="http://app.example/cb", payload="{}", next_attempt_at=now
            )
            for _ in range(100)
        ]
        s.add_all(notes)
        s.commit()
        ids = [n.id for n in notes]
    queued: list[int] = []
    lock = threading.Lock()

    def queue(batch: Sequence[int]) -> None:
        with lock:
            queued.extend(batch)

    race(6, lambda i: notify.queue_due(queue))
    assert Counter(queued) == Counter({i: 1 for i in ids})


# ---------------------------------------------------------------- balance alerts


@pytest.fixture
def pg_alerts(env: pytest.MonkeyPatch, postgres: EmbeddedPostgres) -> str:
    """test_alerts_delivery's `env` (sandbox, Redis, keccel low balance 100) on PostgreSQL."""
    url = postgres.database()
    env.setenv("SMSQ_DATABASE_URL", url)
    reload_settings()
    db.reset_engine()
    assert db.get_engine().dialect.name == "postgresql"
    return url


def test_balance_checks_racing_on_postgres_raise_one_alert(
    pg_alerts: str, sandbox: RunningSandbox, webhook: WebhookServer
) -> None:
    """Four checks at once (beats on four hosts), three times over: one alert per
    crossing, one re-arm in between, one webhook post per alert."""
    account(sandbox, "keccel", balance=1)
    race(4, lambda i: check_all())
    assert [a.kind for a in stored_alerts()] == ["low_balance"]
    assert len(webhook.received) == 1
    account(sandbox, "keccel", balance=1000)
    race(4, lambda i: check_all())
    assert alerts.firing("keccel")["low_balance"] is False
    account(sandbox, "keccel", balance=2)
    race(4, lambda i: check_all())
    assert [a.kind for a in stored_alerts()] == ["low_balance", "low_balance"]
    assert [body["balance"] for body in webhook.received] == [1.0, 2.0]
    with db.session() as s:
        assert s.exec(select(func.count()).select_from(BalanceSnapshot)).one() == 24
        states = s.exec(select(AlertState)).all()
    assert sorted(st.kind for st in states) == sorted(KINDS)  # keccel's, created once
    [firing] = [st for st in states if st.firing]
    assert (firing.provider, firing.kind) == ("keccel", "low_balance")
    assert firing.fired_at is not None and firing.fired_at.utcoffset() == timedelta(0)
    assert all(d.state == "delivered" for d in deliveries())
