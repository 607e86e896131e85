"""`claim_many` and `move_many`: the set-based store path keeps `claim`/`move`'s rules.

Real SQLite store; the broker is absent (metrics and publishing fail quietly).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import select

from producer import db
from producer.models import AppNotification, Message, MessageEvent, utcnow
from producer.status import Status
from tests.unit.conftest import isolate, restore
from worker.ops.logs import JsonFormatter
from worker.store.transitions import Move, claim_many, load_rows, move, move_many


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[None]:
    isolate(monkeypatch, tmp_path, SMSQ_SMSCLUB_TOKEN="t")
    yield
    restore(monkeypatch)


def rows(n: int, status: Status = Status.QUEUED, callback_url: str | None = None) -> list[str]:
    made = [
        Message(
            to=f"38067123456{i}",
            text="code",
            provider="smsclub",
            status=status.value,
            callback_url=callback_url,
        )
        for i in range(n)
    ]
    with db.session() as s:
        s.add_all(made)
        s.commit()
        return [m.id for m in made]


def statuses(ids: list[str]) -> list[str]:
    with db.session() as s:
        return [m.status for m in load_rows(s, ids)]


def events(ids: list[str]) -> list[MessageEvent]:
    with db.session() as s:
        return list(
            s.exec(
                select(MessageEvent)
                .where(MessageEvent.message_id.in_(ids))  # type: ignore[union-attr]
                .order_by(MessageEvent.id)  # type: ignore[arg-type]
            )
        )


def accepted(row: Message, n: int) -> Move:
    return Move(row, {"provider_message_id": f"gw-{n}", "sent_at": utcnow()}, raw={"n": n})


def test_claim_many_claims_queued_rows_once_each(store: None) -> None:
    ids = rows(4)
    with db.session() as s:
        move(s, load_rows(s, [ids[3]])[0], Status.FAILED, source="test")
        s.commit()
    with db.session() as s:
        assert [r.id for r in claim_many(s, [*ids, "no-such-id"], utcnow())] == ids[:3]
        s.commit()
    with db.session() as s:
        assert claim_many(s, ids, utcnow()) == []  # a redelivered task claims nothing
        s.commit()
    assert statuses(ids) == ["sending"] * 3 + ["failed"]
    with db.session() as s:
        assert [m.attempts for m in load_rows(s, ids)] == [1, 1, 1, 0]
    claims = [e for e in events(ids) if e.note == "claimed for sending"]
    assert sorted(e.message_id for e in claims) == sorted(ids[:3])  # type: ignore[type-var]


def test_racing_claim_many_gives_each_row_to_one_task(store: None) -> None:
    ids = rows(60)

    def take(_: int) -> list[str]:
        with db.session() as s:
            got = [r.id for r in claim_many(s, ids, utcnow())]
            s.commit()
            return got

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(take, range(4)))
    everything = [i for got in results for i in got]
    assert sorted(everything) == sorted(ids)


def test_move_many_moves_every_row_with_its_own_fields_events_and_notifications(
    store: None,
) -> None:
    ids = rows(3, Status.SENDING, callback_url="https://app.example/status")
    with db.session() as s:
        loaded = load_rows(s, ids)
        assert move_many(s, Status.SENT, [accepted(r, n) for n, r in enumerate(loaded)],
                         source="worker") == 3  # fmt: skip
        assert [r.status for r in loaded] == ["sent"] * 3  # the objects follow the rows
        s.commit()
    with db.session() as s:
        stored = load_rows(s, ids)
        assert [(r.status, r.provider_message_id) for r in stored] == [
            ("sent", "gw-0"), ("sent", "gw-1"), ("sent", "gw-2")
        ]  # fmt: skip
        notified = list(s.exec(select(AppNotification)))
    changes = [(e.message_id, e.old_status, e.new_status, e.raw) for e in events(ids)]
    assert changes == [(i, "sending", "sent", f'{{"n": {n}}}') for n, i in enumerate(ids)]
    assert sorted(n.message_id for n in notified) == sorted(ids)


def test_a_group_move_logs_one_line_naming_every_id_and_a_lone_move_its_own(
    store: None, caplog: pytest.LogCaptureFixture
) -> None:
    ids = rows(3, Status.SENDING)
    with db.session() as s, caplog.at_level(logging.INFO, logger="smsq.transitions"):
        move_many(s, Status.SENT, [accepted(r, n) for n, r in enumerate(load_rows(s, ids))],
                  source="worker")  # fmt: skip
        move(s, load_rows(s, [ids[0]])[0], Status.DELIVERED, source="provider")
        s.commit()
    lines = [r for r in caplog.records if r.name == "smsq.transitions"]
    assert [r.getMessage() for r in lines] == [
        f"3 messages via smsclub sending -> sent: {' '.join(ids)}",
        f"message {ids[0]} sent -> delivered",
    ]
    assert lines[0].message_ids == ids  # type: ignore[attr-defined]
    assert json.loads(JsonFormatter().format(lines[0]))["message_ids"] == ids


def test_move_many_leaves_a_row_someone_else_moved_and_records_it(store: None) -> None:
    ids = rows(3, Status.SENDING)
    with db.session() as s:
        loaded = load_rows(s, ids)  # read as `sending`
    with db.session() as s:  # meanwhile the sweep failed the middle one
        move(s, load_rows(s, [ids[1]])[0], Status.FAILED, source="beat")
        s.commit()
    with db.session() as s:
        mine = load_rows(s, ids)
        for row, stale in zip(mine, loaded, strict=True):
            row.status = stale.status  # what this task last read
        assert move_many(s, Status.SENT, [accepted(r, n) for n, r in enumerate(mine)],
                         source="worker") == 2  # fmt: skip
        s.commit()
    assert statuses(ids) == ["sent", "failed", "sent"]
    ignored = [e for e in events([ids[1]]) if not e.applied]
    assert [(e.old_status, e.new_status) for e in ignored] == [("failed", "sent")]


def test_move_many_never_moves_backwards(store: None) -> None:
    ids = rows(2, Status.DELIVERED)
    with db.session() as s:
        loaded = load_rows(s, ids)
        assert move_many(s, Status.SENT, [accepted(r, n) for n, r in enumerate(loaded)],
                         source="worker") == 0  # fmt: skip
        s.commit()
    assert statuses(ids) == ["delivered", "delivered"]
    assert [e.applied for e in events(ids)] == [False, False]
