"""Fencing: a worker that comes back after its claim was settled changes nothing.

A worker cut off from the store for longer than its heartbeat (a partitioned host)
still holds its claimed rows in memory, and often the gateway's answers. Meanwhile
beat has settled its claims and another worker may have claimed the rows again.
Every write the first worker makes after its request must then change nothing:
each is conditional, in the UPDATE itself, on the row still being `sending` under
the claim token it was claimed with (`worker.store.transitions.fence`).

Each writer is run twice on a real store (SQLite and PostgreSQL): as the stale
worker, which must leave every column as it found it, and as the worker that holds
the claim now, which must change the rows (so the first check can fail).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from producer import db
from producer.models import Message, MessageEvent, utcnow
from producer.status import Status
from tests.pg import EmbeddedPostgres
from tests.unit.conftest import isolate, restore
from worker.gateways.base import RetryableProviderError, SendResult
from worker.resilience import liveness
from worker.sending import divert, record
from worker.sending import send as sending
from worker.sending.outcome import SendOutcome
from worker.store.transitions import Move, claim_many, fence, load_rows, move, move_many

STALE = "a" * 32  # the claim of the worker that was cut off
NEW = "b" * 32  # the claim another worker made since
NOT_APPLIED = "not applied: this worker's claim was settled meanwhile"


@pytest.fixture(scope="module")
def pg_url(request: pytest.FixtureRequest) -> str:
    postgres: EmbeddedPostgres = request.getfixturevalue("postgres")
    return postgres.database("fence")


@pytest.fixture(params=["sqlite", "postgres"])
def store(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[str]:
    env = {"SMSQ_SMSCLUB_TOKEN": "c", "SMSQ_KECCEL_TOKEN": "k"}
    if request.param == "postgres":
        env["SMSQ_DATABASE_URL"] = request.getfixturevalue("pg_url")
    isolate(monkeypatch, tmp_path, **env)
    assert (
        db.get_engine().dialect.name
        == {"sqlite": "sqlite", "postgres": "postgresql"}[request.param]
    )
    yield request.param
    liveness.stop_heartbeat()  # the claims started it: not left beating after the test
    restore(monkeypatch)


def add_rows(n: int) -> list[str]:
    made = [
        Message(to=f"38067123456{i}", text=f"code {i}", provider="smsclub", fallbacks="keccel")
        for i in range(n)
    ]
    with db.session() as s:
        s.add_all(made)
        s.commit()
        return [m.id for m in made]


def claimed(ids: list[str], token: str) -> list[Message]:
    """The rows as a worker holds them after its claim under `token`."""
    rows = sending._claim(ids, token, retake=False)
    assert [r.claim_token for r in rows] == [token] * len(ids)
    return rows


def settle(ids: list[str], then: str) -> None:
    """What beat and the other workers did while the first worker was away: its
    claims settled as uncertain sends and `then` one of: queued again and claimed by
    another worker (`reclaimed`), queued again (`requeued`), found at the gateway
    (`sent`)."""
    with db.session() as s:
        for row in load_rows(s, ids):
            if then == "sent":
                move(s, row, Status.SENT, source="beat", provider_message_id=f"found-{row.id}")
            else:
                move(s, row, Status.QUEUED, source="beat", note="uncertain send: requeued")
        s.commit()
    if then == "reclaimed":
        with db.session() as s:
            assert [r.id for r in claim_many(s, ids, utcnow(), NEW)] == ids
            s.commit()


def snapshot(ids: list[str]) -> list[dict[str, Any]]:
    with db.session() as s:
        return [r.model_dump() for r in load_rows(s, ids)]


def not_applied(ids: list[str]) -> int:
    with db.session() as s:
        notes = s.exec(
            select(MessageEvent.note).where(
                MessageEvent.message_id.in_(ids),  # type: ignore[union-attr]
                MessageEvent.applied == False,  # noqa: E712
            )
        ).all()
    return sum(1 for n in notes if n and n.startswith(NOT_APPLIED))


Requeued = list[tuple[list[str], float]]


def _results(rows: list[Message], **kw: Any) -> list[SendResult]:
    return [SendResult(r.id, kw.get("status", Status.SENT), f"gw-{r.id}", **kw) for r in rows]


def _refused(rows: list[Message]) -> list[SendResult]:
    return [SendResult(r.id, Status.REJECTED, None, error="invalid number") for r in rows]


def _in_outbox(rows: list[Message]) -> list[SendResult]:
    return [SendResult(r.id, Status.SENT, None, raw={"outbox_id": "77"}) for r in rows]


# Every write a worker makes to its claimed rows after (or instead of) its request.
WRITERS: dict[str, Callable[[list[Message], Requeued], object]] = {
    "answer: accepted": lambda rows, q: record._store_results(
        "smsclub", rows, _results(rows), SendOutcome()
    ),
    "answer: accepted, the claimed rows as they are": lambda rows, q: record._store_results(
        "smsclub", rows, _results(rows), SendOutcome(), fresh=True
    ),
    "answer: refused": lambda rows, q: record._store_results(
        "smsclub", rows, _refused(rows), SendOutcome()
    ),
    "answer: none for the message": lambda rows, q: record._store_results(
        "smsclub", rows, [], SendOutcome()
    ),
    "answer: held in the outbox": lambda rows, q: record._store_results(
        "smsclub", rows, _in_outbox(rows), SendOutcome()
    ),
    "retry later": lambda rows, q: record._retry_later(
        rows, RetryableProviderError("503"), lambda ids, c: q.append((list(ids), c))
    ),
    "rate-limit hand-back": lambda rows, q: record._hand_back(
        rows, 1.0, lambda ids, c: q.append((list(ids), c)), note="rate limit"
    ),
    "expire": lambda rows, q: record._expire(rows, SendOutcome()),
    "fail": lambda rows, q: record._fail(rows, "permanent: no credit"),
    "mark uncertain": lambda rows, q: record._mark_uncertain(rows, "answer lost"),
    "divert (breaker open)": lambda rows, q: divert._divert(
        "smsclub",
        rows,
        "smsclub circuit breaker open",
        2.0,
        lambda ids, c: q.append((ids, c)),
        SendOutcome(),
    ),
    "give back (batch broke off)": lambda rows, q: sending._unclaim(rows),
    "release (uncertain)": lambda rows, q: sending._release_claims(rows),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_stale_worker_changes_nothing_on_rows_another_worker_has_claimed(
    store: str, writer: str
) -> None:
    ids = add_rows(3)
    stale = claimed(ids, STALE)
    settle(ids, "reclaimed")
    before = snapshot(ids)
    requeued: Requeued = []
    WRITERS[writer](stale, requeued)
    assert snapshot(ids) == before
    assert requeued == []  # no task queued for rows that are not its own
    # The worker that holds the claim now: the same write does change the rows.
    current = claimed_rows(ids)
    WRITERS[writer](current, requeued)
    assert snapshot(ids) != before


def claimed_rows(ids: list[str]) -> list[Message]:
    with db.session() as s:
        return load_rows(s, ids)


@pytest.mark.parametrize("then", ["requeued", "sent"])
@pytest.mark.parametrize(
    "writer",
    ["answer: accepted", "answer: refused", "retry later", "fail", "divert (breaker open)"],
)
def test_a_stale_worker_changes_nothing_on_rows_beat_settled(
    store: str, writer: str, then: str
) -> None:
    """Without the fence, a `queued` row would take the stale answer (queued -> sent is
    a forward move), and the sweep's resend would then find nothing to send."""
    ids = add_rows(2)
    stale = claimed(ids, STALE)
    settle(ids, then)
    before = snapshot(ids)
    WRITERS[writer](stale, [])
    assert snapshot(ids) == before


def test_the_stale_answer_is_kept_as_an_event_that_changed_nothing(store: str) -> None:
    ids = add_rows(2)
    stale = claimed(ids, STALE)
    settle(ids, "reclaimed")
    outcome = SendOutcome()
    record._store_results("smsclub", stale, _results(stale), outcome)
    assert outcome.sent == 0
    assert not_applied(ids) == 2
    with db.session() as s:
        rows = load_rows(s, ids)
    assert {(r.status, r.claim_token, r.provider_message_id) for r in rows} == {
        ("sending", NEW, None)
    }


def test_the_fence_is_in_the_update_not_only_in_what_was_read(store: str) -> None:
    """The stale worker reads its rows while they are still its own; beat settles
    them and another worker claims them before its UPDATE: the UPDATE matches
    nothing (`move`, `move_many` and the uncertain-send release alike)."""
    ids = add_rows(4)
    stale = claimed(ids, STALE)
    with db.session() as s:
        fence(s, stale)
        rows = load_rows(s, ids)
        assert {(r.status, r.claim_token) for r in rows} == {("sending", STALE)}
        s.commit()  # SQLite: end the read, so the other "worker" may write
        settle(ids, "reclaimed")
        before = snapshot(ids)
        assert not move(s, rows[0], Status.SENT, source="worker", provider_message_id="gw")
        moves = [Move(r, {"provider_message_id": f"gw-{r.id}"}) for r in rows[1:3]]
        assert move_many(s, Status.SENT, moves, source="worker") == 0
        assert sending_update_held(s, stale[3:]) == set()
        s.commit()
    assert snapshot(ids) == before
    assert not_applied(ids) == 3


def sending_update_held(s: Any, rows: list[Message]) -> set[str]:
    from worker.store.transitions import update_held

    return update_held(s, rows, claimed_by="released")


def test_a_fenced_row_moved_by_its_writer_takes_later_reports_in_the_same_write(
    store: str,
) -> None:
    """Once the writer's own move has taken the row out of `sending`, the fence is
    done with: an early delivery report applied in the same transaction is not a
    stale write."""
    ids = add_rows(1)
    [row] = claimed(ids, STALE)
    with db.session() as s:
        fence(s, [row])
        [fresh] = load_rows(s, ids)
        assert move(s, fresh, Status.SENT, source="worker", provider_message_id="gw-1")
        assert move(s, fresh, Status.DELIVERED, source="push")
        s.commit()
    assert [r["status"] for r in snapshot(ids)] == ["delivered"]
    assert not_applied(ids) == 0


def test_the_writers_own_copies_keep_their_claim_so_a_retried_write_is_fenced_too(
    store: str,
) -> None:
    """A writer may use the rows as its claim returned them (no read again): a refused
    write leaves them as they are, so the same write tried again (the store failed
    at its commit) fences with the same token, not with the new claim's."""
    ids = add_rows(3)
    stale = claimed(ids, STALE)
    settle(ids, "reclaimed")
    before = snapshot(ids)
    for _ in range(2):  # the write, and the same write tried again
        with db.session() as s:
            fence(s, stale)
            s.add_all(stale)  # the worker's own copies, not read again
            assert not move(s, stale[0], Status.FAILED, source="worker", error="x")
            moves = [Move(r, {"provider_message_id": f"gw-{r.id}"}) for r in stale[1:]]
            assert move_many(s, Status.SENT, moves, source="worker") == 0
            s.commit()
        assert [(r.status, r.claim_token) for r in stale] == [("sending", STALE)] * 3
    assert snapshot(ids) == before
    assert not_applied(ids) == 6
