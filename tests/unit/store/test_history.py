"""Cost does not grow with history, and history does not keep personal data forever.

Every statement that beat's tick, `/metrics`, `get_status`, the event history, the
burn rate, a pushed report and retention run is captured as it runs on a real store
(SQLite, and the embedded PostgreSQL of tests/pg.py), then EXPLAINed with its own
parameters: none may read `messages`, `message_events` or `app_notifications` whole
(PostgreSQL with sequential scans disabled, so "no index fits" shows as a Seq Scan
whatever the table's size). A partial index may be read whole: it holds only the
rows still moving, never the final history. `make bench` measures the same with a
million final messages (bench/history.py).

Retention (worker.store.retention): after SMSQ_RETENTION_DAYS a final message keeps
a masked number, no text and no raw payloads, and everything else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Index, event
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, select

import producer.models
from producer import db, get_status
from producer.api import message_events
from producer.models import Message, MessageEvent, status_sql, utcnow
from producer.status import Status
from tests.pg import EmbeddedPostgres
from tests.unit.conftest import isolate, restore
from worker.balance.checks import burn_for
from worker.gateways.base import StatusReport
from worker.resilience import sweeps
from worker.store import retention
from worker.store.transitions import record_event
from worker.tracking import dlr, notify

HISTORY_TABLES = ("messages", "message_events", "app_notifications")
DRC = "243851234567"
OLD = timedelta(days=100)


@pytest.fixture(params=["sqlite", "postgres"])
def store(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[str]:
    """A clean environment and an empty store: SQLite, then a new PostgreSQL database."""
    env = {"SMSQ_KECCEL_TOKEN": "k", "SMSQ_SMSCLUB_TOKEN": "c", "SMSQ_KECCEL_DLR_MODE": "both"}
    if request.param == "postgres":
        postgres: EmbeddedPostgres = request.getfixturevalue("postgres")
        env["SMSQ_DATABASE_URL"] = postgres.database("history")
    isolate(monkeypatch, tmp_path, **env)
    assert db.get_engine().dialect.name == ("sqlite" if request.param == "sqlite" else "postgresql")
    yield request.param
    restore(monkeypatch)


def partial_indexes() -> set[str]:
    names = set()
    for table in SQLModel.metadata.tables.values():
        for index in table.indexes:
            if index.dialect_options["sqlite"]["where"] is not None:
                names.add(str(index.name))
    return names


# --- a store with a little of everything ----------------------------------------


def add(s: Any, **values: Any) -> Message:
    now = utcnow()
    row = Message(
        **{"to": DRC, "text": "hello", "provider": "keccel", "created_at": now, "updated_at": now}
        | values
    )
    s.add(row)
    return row


def fill() -> dict[str, str]:
    """Final rows (old and recent, with events carrying raw payloads) and one row for
    each due query of the tick; their ids by role."""
    now = utcnow()
    ids: dict[str, str] = {}
    every: list[str] = []
    with db.session() as s:
        for i in range(30):
            at = now - OLD if i % 2 else now - timedelta(days=1)
            row = add(
                s,
                to=f"2438512345{i:02d}",
                status="delivered",
                provider_message_id=f"d{i}",
                sent_at=at,
                created_at=at,
                updated_at=at,
            )
            ids.setdefault("old" if i % 2 else "recent", row.id)
            every.append(row.id)
        ids["queued"] = add(s, next_attempt_at=now - timedelta(seconds=1)).id
        ids["scheduled"] = add(s, status="scheduled", send_at=now - timedelta(seconds=1)).id
        ids["stale"] = add(s, ttl=60, expires_at=now - timedelta(seconds=1), next_attempt_at=now).id
        ids["sent"] = add(
            s,
            status="sent",
            provider_message_id="p-sent",
            sent_at=now,
            next_poll_at=now - timedelta(seconds=1),
        ).id
        ids["sending"] = add(s, status="sending", claimed_at=now, claimed_by="w@h").id
        s.commit()
        every.append(ids["sending"])
        for message_id in every + [ids[k] for k in ("queued", "scheduled", "stale", "sent")]:
            for kind in ("status", "attempt"):
                record_event(
                    s, message_id, source="worker", kind=kind, raw={"to": DRC, "answer": "ok"}
                )
        s.commit()
    return ids


def every_read_path(ids: dict[str, str]) -> None:
    """What runs again and again whatever the history: the tick, a scrape, status
    reads, the burn rate, pushed reports (one known, one not), a retention run, the
    dashboard's waiting and uncertain rows."""
    from worker.web import prometheus_metrics

    sweeps.tick(lambda _ids: None, lambda _p, _ids: None, lambda _ids: None)
    notify.queue_due(lambda _ids: None)
    prometheus_metrics()
    get_status(ids["old"])
    message_events(ids["old"])
    burn_for("keccel", "credits")
    report = StatusReport(provider_message_id="p-sent", status=Status.DELIVERED, raw_status="D")
    unknown = StatusReport(provider_message_id="nobody", status=Status.DELIVERED, raw_status="D")
    dlr.apply_push("keccel", [report, unknown])
    dlr.expire_unmatched_reports()
    retention.run(sleep=False)
    from worker.ui import queries as ui

    ui.waiting_by_priority()  # the dashboard's own reads of the moving rows
    ui.uncertain_sends()


def captured(run: Callable[[], None]) -> list[tuple[str, Any]]:
    """(statement, parameters) of every read, update or delete of the history tables."""
    seen: list[tuple[str, Any]] = []

    def listen(_conn, _cursor, statement, parameters, _context, executemany):  # type: ignore[no-untyped-def]
        head = statement.lstrip().split(None, 1)[0].upper()
        if head in ("SELECT", "UPDATE", "DELETE") and any(t in statement for t in HISTORY_TABLES):
            seen.append((statement, parameters[0] if executemany else parameters))

    event.listen(Engine, "before_cursor_execute", listen)
    try:
        run()
    finally:
        event.remove(Engine, "before_cursor_execute", listen)
    return seen


def whole_reads(statement: str, parameters: Any) -> list[str]:
    """The scans of `statement` that read a history table (or a full index of it)
    whole; [] when every one is an index search or a partial index."""
    raw = db.get_engine().raw_connection()
    try:
        cursor = raw.cursor()
        if db.get_engine().dialect.name == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            details = [row[3] for row in cursor.fetchall()]
            return [d for d in details if _sqlite_whole(d)]
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
        plan = cursor.fetchone()[0]
        return list(_pg_whole(plan[0]["Plan"] if isinstance(plan, list) else plan))
    finally:
        raw.rollback()
        raw.close()


def _sqlite_whole(detail: str) -> bool:
    words = detail.split()
    if words[:1] != ["SCAN"] or words[1] not in HISTORY_TABLES:
        return False
    return not any(name in detail for name in partial_indexes())


def _pg_whole(node: dict[str, Any]) -> Iterator[str]:
    kind = node.get("Node Type", "")
    relation = node.get("Relation Name")
    if relation in HISTORY_TABLES and "Scan" in kind and kind != "Bitmap Heap Scan":
        partial = node.get("Index Name") in partial_indexes()
        if kind == "Seq Scan" or not (partial or "Index Cond" in node):
            yield f"{kind} on {relation} ({node.get('Index Name')})"
    for child in node.get("Plans", []):
        yield from _pg_whole(child)


def test_every_repeated_statement_finds_its_rows_by_an_index(store: str) -> None:
    ids = fill()
    statements = captured(lambda: every_read_path(ids))
    assert len(statements) > 20  # the paths above ran, and were seen
    joined = " ".join(s for s, _p in statements)
    for needle in ("next_attempt_at", "next_poll_at", "expires_at", "send_at", "redacted_at"):
        assert needle in joined, needle
    bad = {s: w for s, p in statements if (w := whole_reads(s, p))}
    assert bad == {}


def test_a_full_read_is_caught() -> None:
    """The check above can fail: a status given as a parameter reads the table whole
    on SQLite (a partial index needs the literal)."""
    plan = ["SCAN messages"]
    assert _sqlite_whole(plan[0])
    assert not _sqlite_whole("SEARCH messages USING INDEX ix_messages_due_send (next_attempt_at<?)")
    assert not _sqlite_whole("SCAN messages USING COVERING INDEX ix_messages_active")
    assert list(_pg_whole({"Node Type": "Seq Scan", "Relation Name": "messages"}))
    assert list(_pg_whole({"Node Type": "Index Scan", "Relation Name": "messages"}))


def test_a_bound_status_would_miss_the_partial_index_in_a_generic_plan(store: str) -> None:
    """Why the due queries write their statuses into the SQL (`status_is`): psycopg
    prepares a statement run five times, and PostgreSQL may then plan it once for any
    value; such a plan cannot use an index whose WHERE depends on a parameter."""
    fill()
    literal = "SELECT id FROM messages WHERE status = 'queued' AND next_attempt_at <= '2030-01-01'"
    assert whole_reads(literal, () if store == "sqlite" else None) == []
    if store == "sqlite":  # SQLite plans again with the bound values: either form works
        bound = "SELECT id FROM messages WHERE status = ? AND next_attempt_at <= ?"
        assert whole_reads(bound, ("queued", "2030-01-01")) == []
        return
    raw = db.get_engine().raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        cursor.execute(
            "PREPARE due(text, timestamptz) AS "
            "SELECT id FROM messages WHERE status = $1 AND next_attempt_at <= $2"
        )
        cursor.execute("EXPLAIN (FORMAT JSON) EXECUTE due('queued', now())")
        generic = cursor.fetchone()[0][0]["Plan"]
        cursor.execute(
            "PREPARE due_literal(timestamptz) AS "
            "SELECT id FROM messages WHERE status = 'queued' AND next_attempt_at <= $1"
        )
        cursor.execute("EXPLAIN (FORMAT JSON) EXECUTE due_literal(now())")
        literal_plan = cursor.fetchone()[0][0]["Plan"]
    finally:
        raw.rollback()
        raw.close()
    assert list(_pg_whole(generic)) == ["Seq Scan on messages (None)"]
    assert list(_pg_whole(literal_plan)) == []


def test_the_migration_builds_the_models_partial_indexes() -> None:
    """0010 spells its predicates out; they must be the models' (alembic's comparison
    of the schema does not look at an index's WHERE)."""
    import importlib.util

    path = Path(db.MIGRATIONS) / "versions" / "0010_history_indexes_and_retention.py"
    spec = importlib.util.spec_from_file_location("m0010", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    models: dict[str, tuple[str, list[str], str]] = {}
    for table in SQLModel.metadata.tables.values():
        for index in table.indexes:
            where = index.dialect_options["sqlite"]["where"]
            if where is not None:
                assert str(index.dialect_options["postgresql"]["where"]) == str(where)
                models[str(index.name)] = (table.name, [c.name for c in index.columns], str(where))
    assert models == module.PARTIAL


def test_status_sql_spells_out_known_statuses_only() -> None:
    assert status_sql(("queued",)) == "status = 'queued'"
    assert status_sql(("scheduled", "queued")) == "status IN ('scheduled', 'queued')"
    with pytest.raises(ValueError):
        status_sql(("queued'; DROP TABLE messages; --",))
    assert isinstance(producer.models.MESSAGE_INDEXES[0], Index)


# --- the /metrics gauges ----------------------------------------------------------


def test_metrics_count_the_messages_still_moving_and_not_the_history(store: str) -> None:
    from worker.web import prometheus_metrics

    fill()
    text = prometheus_metrics().body.decode()
    gauges = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("smsq_messages_by_status{")
    }
    assert gauges == {
        'smsq_messages_by_status{provider="keccel",status="queued"}': 2.0,
        'smsq_messages_by_status{provider="keccel",status="scheduled"}': 1.0,
        'smsq_messages_by_status{provider="keccel",status="sending"}': 1.0,
        'smsq_messages_by_status{provider="keccel",status="sent"}': 1.0,
        # configured, nothing moving: zeros, not missing series
        'smsq_messages_by_status{provider="smsclub",status="queued"}': 0.0,
        'smsq_messages_by_status{provider="smsclub",status="scheduled"}': 0.0,
        'smsq_messages_by_status{provider="smsclub",status="sending"}': 0.0,
        'smsq_messages_by_status{provider="smsclub",status="sent"}': 0.0,
    }
    assert 'smsq_messages_by_priority{provider="keccel",priority="normal",status="queued"} 2' in (
        text
    )
    assert "delivered" not in "".join(gauges)


# --- retention --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("243851234567", "2438512****67"),
        ("380989361131", "3809893****31"),
        ("31612345678", "316123****78"),
        ("4915112345678901", "4915112****01"),
        ("22890123", "228****23"),
        ("12345", "****"),
        ("2438512****67", "2438512****67"),
    ],
)
def test_a_number_is_masked_keeping_country_network_and_two_last_digits(
    number: str, masked: str
) -> None:
    assert retention.mask_number(number) == masked
    assert sum(c.isdigit() for c in number) - sum(c.isdigit() for c in masked) >= 3 or (
        "*" in number
    )


def snapshot(message_id: str) -> tuple[Message, list[MessageEvent]]:
    with db.session() as s:
        row = s.get(Message, message_id)
        events = list(s.exec(select(MessageEvent).where(MessageEvent.message_id == message_id)))
    assert row is not None
    return row, events


def test_retention_masks_old_final_messages_and_keeps_the_rest(store: str) -> None:
    ids = fill()
    before_old, events_old = snapshot(ids["old"])
    before_recent, _ = snapshot(ids["recent"])
    done = retention.run(sleep=False)
    assert done.messages == 15 and done.events == 30  # the 15 old delivered rows
    row, events = snapshot(ids["old"])
    assert row.to == retention.mask_number(before_old.to) and "****" in row.to
    assert row.text == "" and row.redacted_at is not None
    assert (row.status, row.segments, row.encoding, row.attempts, row.provider_message_id) == (
        before_old.status,
        before_old.segments,
        before_old.encoding,
        before_old.attempts,
        before_old.provider_message_id,
    )
    assert row.updated_at == before_old.updated_at  # its last change is still its own
    assert [e.raw for e in events] == [None, None]
    assert [(e.kind, e.source, e.created_at) for e in events] == [
        (e.kind, e.source, e.created_at) for e in events_old
    ]
    status = get_status(ids["old"])
    assert status is not None and status.redacted_at is not None and status.text == ""
    assert snapshot(ids["recent"])[0].to == before_recent.to  # final, but recent
    for role in ("queued", "scheduled", "sent", "sending"):  # not final: kept whole
        row, events = snapshot(ids[role])
        assert row.to == DRC and row.text == "hello" and row.redacted_at is None, role
        assert all(json.loads(e.raw or "null") == {"to": DRC, "answer": "ok"} for e in events)
    assert retention.run(sleep=False).messages == 0  # nothing left to do


def test_retention_takes_small_batches_oldest_first(store: str) -> None:
    fill()
    cutoff = utcnow() - timedelta(days=90)
    assert retention.redact_batch(cutoff, limit=4) == (4, 8)
    with db.session() as s:
        done = s.exec(select(Message.updated_at).where(Message.redacted_at.is_not(None))).all()  # type: ignore[union-attr]
        left = s.exec(
            select(Message.updated_at).where(
                Message.redacted_at.is_(None),  # type: ignore[union-attr]
                Message.status == "delivered",
                Message.updated_at < cutoff,  # type: ignore[arg-type]
            )
        ).all()
    assert len(done) == 4 and len(left) == 11
    assert max(done) <= min(left)
    run = retention.run(sleep=False, batch=4)
    assert (run.messages, run.batches) == (11, 3)


def test_retention_days_zero_keeps_everything(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from producer.settings import reload_settings

    ids = fill()
    monkeypatch.setenv("SMSQ_RETENTION_DAYS", "0")
    reload_settings()
    assert retention.run(sleep=False).messages == 0
    assert snapshot(ids["old"])[0].to == "243851234501"
    monkeypatch.setenv("SMSQ_RETENTION_DAYS", "200")  # older than every row: nothing
    reload_settings()
    assert retention.run(sleep=False).messages == 0
    monkeypatch.setenv("SMSQ_RETENTION_DAYS", "-1")
    with pytest.raises(ValueError, match="retention_days"):
        reload_settings()
        from producer.settings import get_settings

        get_settings()
