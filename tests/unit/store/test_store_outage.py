"""The store unreachable for a while: a clear error at the edge, nothing lost behind it.

The producer, the CLI and the HTTP API answer a store outage with
`StoreUnavailable` (an `EnqueueError`), exit 1 or 503 with Retry-After, naming
neither the database URL nor its password. Behind them, a worker that holds a
gateway's answer keeps trying to store it until the store is back (a real
PostgreSQL, stopped and started), a claim that cannot be made queues the task
again, and a batch that breaks off before its request gives its rows back
instead of leaving them to be settled as uncertain sends.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import select

from producer import EnqueueError, StoreUnavailable, db, get_status, send_bulk, send_sms
from producer import api as producer_api
from producer.models import Message, MessageEvent
from producer.status import Status
from tests.pg import EmbeddedPostgres
from tests.unit.conftest import isolate, restore
from tests.unit.store.test_postgres_store import add_rows
from worker.gateways.base import OutgoingMessage, SendResult
from worker.ops import cli
from worker.sending import send as sending
from worker.store import retry as store_retry

DRC = "243851234567"
PASSWORD = "s3cret-pw"
# Nothing listens on port 1: every connection is refused at once.
DEAD_STORE = f"postgresql+psycopg://smsq:{PASSWORD}@127.0.0.1:1/smsq?connect_timeout=2"


def outage() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))


# ---------------------------------------------------------------- store_retry.durably


def test_durably_tries_again_through_an_outage_and_returns_the_value() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def write() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise outage()
        return "stored"

    assert store_retry.durably("test", write, budget=60, sleep=slept.append) == "stored"
    assert len(calls) == 4
    assert slept == [0.25, 0.5, 1.0]  # backoff doubling from FIRST_DELAY


def test_durably_raises_other_errors_at_once() -> None:
    calls: list[int] = []

    def write() -> None:
        calls.append(1)
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(IntegrityError):
        store_retry.durably("test", write, budget=60, sleep=lambda _s: None)
    assert calls == [1]


def test_durably_gives_up_after_its_budget() -> None:
    calls: list[int] = []

    def write() -> None:
        calls.append(1)
        raise outage()

    with pytest.raises(OperationalError):
        store_retry.durably("test", write, budget=1.0)
    # Tried at 0, 0.25 and 0.75 s; the next wait (1 s) would pass the budget: raised.
    # Fewer tries only if the machine stalled between them.
    assert 2 <= len(calls) <= 3


# ---------------------------------------------------------------- the edge


@pytest.fixture
def dead_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[list[str]]]:
    """Settings whose store URL points where nothing listens; publishes recorded."""
    isolate(monkeypatch, tmp_path, SMSQ_DATABASE_URL=DEAD_STORE, SMSQ_KECCEL_TOKEN="k")
    published: list[list[str]] = []
    monkeypatch.setattr(producer_api, "publish_send", lambda ids, **_: published.append(list(ids)))
    yield published
    restore(monkeypatch)


def test_send_sms_on_an_unreachable_store_raises_store_unavailable(
    dead_store: list[list[str]],
) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        send_sms(DRC, "hello", provider="keccel")
    assert isinstance(caught.value, EnqueueError)  # what apps already catch
    text = str(caught.value)
    assert text.startswith("message store unavailable (OperationalError)")
    assert "nothing was stored or queued" in text
    assert PASSWORD not in text and "127.0.0.1" not in text
    with pytest.raises(StoreUnavailable):
        send_bulk([DRC, "243851234568"], "hello", provider="keccel", idempotency_key="k1")
    with pytest.raises(StoreUnavailable):
        get_status("some-id")
    assert dead_store == []  # nothing queued


def test_bad_input_is_still_invalid_message_when_the_store_is_down(
    dead_store: list[list[str]],
) -> None:
    from producer import InvalidMessage

    with pytest.raises(InvalidMessage):
        send_sms("not a number", "hello", provider="keccel")


def test_cli_send_on_an_unreachable_store_exits_1_with_the_reason(
    dead_store: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["send", "--to", DRC, "--text", "hi", "--provider", "keccel"])
    err = capsys.readouterr().err
    assert code == 1
    assert "message store unavailable" in err
    assert "Traceback" not in err and PASSWORD not in err


def test_http_api_on_an_unreachable_store_answers_503_with_retry_after(
    dead_store: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from producer.settings import reload_settings
    from worker.web import app

    monkeypatch.setenv("SMSQ_API_KEYS", "key1")
    # The store is what is down here; the limit counters (Redis) have their own 503.
    monkeypatch.setenv("SMSQ_API_KEY_LIMIT", "off")
    monkeypatch.setenv("SMSQ_RECIPIENT_LIMIT", "off")
    reload_settings()
    client = TestClient(app, raise_server_exceptions=False)
    auth = {"Authorization": "Bearer key1"}
    posted = client.post(
        "/v1/messages", json={"to": DRC, "text": "hi", "provider": "keccel"}, headers=auth
    )
    assert posted.status_code == 503
    assert posted.headers["retry-after"] == "5"
    assert "message store unavailable" in posted.json()["error"]
    assert PASSWORD not in posted.text
    read = client.get("/v1/messages/abc", headers=auth)
    assert read.status_code == 503 and read.headers["retry-after"] == "5"
    assert dead_store == []


# ---------------------------------------------------------------- behind the edge (SQLite)


@pytest.fixture
def sqlite_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    isolate(monkeypatch, tmp_path, SMSQ_KECCEL_TOKEN="k")
    yield
    restore(monkeypatch)


def rows_of(ids: Sequence[str]) -> list[Message]:
    with db.session() as s:
        return list(s.exec(select(Message).where(Message.id.in_(ids))))  # type: ignore[union-attr]


class CountingGateway:
    """Accepts everything, counts each message; `during_request` runs mid-request."""

    duplicate_window_seconds = None

    def __init__(self, during_request: object = None) -> None:
        self.sent: Counter[str] = Counter()
        self.during_request = during_request

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        self.sent.update(m.ref for m in batch)
        if callable(self.during_request):
            self.during_request()
        return [SendResult(m.ref, Status.SENT, f"gw-{m.ref}") for m in batch]


def test_a_batch_broken_off_by_redis_before_its_request_goes_back_to_queued(
    sqlite_store: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing went out, so the rows are not uncertain sends: `queued` again, the
    claim's attempt given back, a time set for the sweep."""
    gateway = CountingGateway()
    monkeypatch.setattr(sending, "get_adapter", lambda name: gateway)

    def redis_down(provider: str, rank: int) -> float:
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(sending, "_rate_wait", redis_down)
    ids = add_rows(3)
    with pytest.raises(redis.ConnectionError):
        sending.send_messages(ids, lambda r, c: None)
    assert gateway.sent == Counter()
    rows = rows_of(ids)
    assert {(r.status, r.attempts) for r in rows} == {("queued", 0)}
    assert all(r.next_attempt_at is not None for r in rows)
    with db.session() as s:
        notes = s.exec(
            select(MessageEvent.note).where(MessageEvent.message_id.in_(ids))  # type: ignore[union-attr]
        ).all()
    assert notes.count("claim given back: the batch broke off before its request") == 3


def test_a_bug_before_the_request_is_not_given_back_to_loop_forever(
    sqlite_store: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an outage gives rows back; any other error releases them as before."""
    monkeypatch.setattr(sending, "get_adapter", lambda name: CountingGateway())

    def bug(provider: str, rank: int) -> float:
        raise KeyError("a bug")

    monkeypatch.setattr(sending, "_rate_wait", bug)
    ids = add_rows(1)
    with pytest.raises(KeyError):
        sending.send_messages(ids, lambda r, c: None)
    [row] = rows_of(ids)
    assert row.status == "sending" and row.claimed_by == "released"


# ---------------------------------------------------------------- behind the edge (PostgreSQL)


@pytest.fixture
def pg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, postgres: EmbeddedPostgres
) -> Iterator[EmbeddedPostgres]:
    isolate(monkeypatch, tmp_path, SMSQ_DATABASE_URL=postgres.database(), SMSQ_KECCEL_TOKEN="k")
    assert db.get_engine().dialect.name == "postgresql"
    yield postgres
    try:
        postgres.up()  # whatever the test did, the server runs for the next one
    finally:
        restore(monkeypatch)


def test_an_answer_that_meets_a_stopped_store_is_stored_once_it_is_back(
    pg: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL goes down while the gateway holds the request and comes back 3 s
    later: the gateway's ids are stored (no uncertain send, nothing sent twice)."""
    back = threading.Event()

    def store_goes_down() -> None:
        if back.is_set() or getattr(store_goes_down, "done", False):
            return  # Keccel sends one message a request: only the first meets the outage
        store_goes_down.done = True  # type: ignore[attr-defined]
        pg.down()

        def later() -> None:
            time.sleep(3.0)
            pg.up()
            back.set()

        threading.Thread(target=later, daemon=True).start()

    gateway = CountingGateway(during_request=store_goes_down)
    monkeypatch.setattr(sending, "get_adapter", lambda name: gateway)
    ids = add_rows(4)
    outcome = sending.send_messages(ids, lambda r, c: None)
    assert back.is_set()  # the answer was stored after the restart, not before
    assert outcome.sent == 4 and outcome.claimed == 4
    assert gateway.sent == Counter({i: 1 for i in ids})
    rows = rows_of(ids)
    assert {(r.status, r.attempts) for r in rows} == {("sent", 1)}
    assert all(r.provider_message_id == f"gw-{r.id}" for r in rows)
    assert all(r.claimed_by != "released" for r in rows)


def test_a_claim_on_a_stopped_store_queues_the_task_again(
    pg: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = CountingGateway()
    monkeypatch.setattr(sending, "get_adapter", lambda name: gateway)
    monkeypatch.setattr(sending, "CLAIM_RETRY_SECONDS", 1.0)
    ids = add_rows(2)
    requeued: list[tuple[list[str], float]] = []
    pg.down()
    outcome = sending.send_messages(ids, lambda r, c, _t=None: requeued.append((list(r), c)))
    pg.up()
    assert requeued == [(ids, sending.CLAIM_REQUEUE_SECONDS)]
    assert outcome.claimed == 0 and gateway.sent == Counter()
    assert {r.status for r in rows_of(ids)} == {"queued"}
    # The queued-again task then sends them, once.
    again = sending.send_messages(ids, lambda r, c: None)
    assert again.sent == 2 and gateway.sent == Counter({i: 1 for i in ids})


def test_the_producer_works_again_once_the_store_is_back(
    pg: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[list[str]] = []
    monkeypatch.setattr(producer_api, "publish_send", lambda ids, **_: published.append(list(ids)))
    pg.down()
    with pytest.raises(StoreUnavailable):
        send_sms(DRC, "while down", provider="keccel", idempotency_key="retry-me")
    pg.up()
    mid = send_sms(DRC, "while down", provider="keccel", idempotency_key="retry-me")
    assert send_sms(DRC, "while down", provider="keccel", idempotency_key="retry-me") == mid
    assert published == [[mid]]
    status = get_status(mid)
    assert status is not None and status.status == "queued"


def test_a_poll_answer_that_meets_a_stopped_store_is_stored_once_it_is_back(
    pg: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not dropped to wait out its 2-minute lease: the poll keeps the gateway's
    answer until the store is back, 2 s later."""
    from worker.gateways.base import StatusReport
    from worker.tracking import polling

    class StatusGateway:
        max_status_batch = 10

        def fetch_status(self, ids: Sequence[str]) -> list[StatusReport]:
            pg.down()
            threading.Timer(2.0, pg.up).start()
            return [StatusReport(i, Status.DELIVERED, "DELIVRD") for i in ids]

    monkeypatch.setattr(polling, "get_adapter", lambda name: StatusGateway())
    [mid] = add_rows(1)
    with db.session() as s:
        row = s.get(Message, mid)
        assert row is not None
        row.status, row.provider_message_id = Status.SENT.value, "gw-1"
        s.add(row)
        s.commit()
    assert polling.poll_messages("keccel", [mid]) == 1
    assert [r.status for r in rows_of([mid])] == ["delivered"]


# ---------------------------------------------------------------- the store failing after the claim


class ClaimCommitAnswerLost:
    """After each of the first `times` commits that follow a claim, the store's answer
    is lost: the commit landed on the server, the worker sees an outage. The same as
    the store failing between the claim and the gateway request."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, times: int) -> None:
        from sqlalchemy import event
        from sqlmodel import Session

        from worker.store import transitions

        self.left = times
        self.armed = False
        real_claim_many = transitions.claim_many

        def claim_many(*args: object, **kwargs: object) -> list[object]:
            self.armed = True
            return real_claim_many(*args, **kwargs)  # type: ignore[arg-type]

        def after_commit(_session: object) -> None:
            if self.armed and self.left > 0:
                self.armed = False
                self.left -= 1
                raise outage()

        monkeypatch.setattr(sending, "claim_many", claim_many)
        event.listen(Session, "after_commit", after_commit)
        self._remove = lambda: event.remove(Session, "after_commit", after_commit)


@pytest.fixture
def claim_answer_lost(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[ClaimCommitAnswerLost]]:
    made: list[ClaimCommitAnswerLost] = []

    def make(times: int) -> ClaimCommitAnswerLost:
        made.append(ClaimCommitAnswerLost(monkeypatch, times))
        return made[-1]

    yield make  # type: ignore[misc]
    for hook in made:
        hook._remove()


def test_a_claim_whose_commit_answer_is_lost_is_still_sent_once(
    sqlite_store: None, monkeypatch: pytest.MonkeyPatch, claim_answer_lost: object
) -> None:
    """The bug of issue 18 point 0: the retried claim found its own rows already
    `sending` and claimed nothing, so they stayed claimed by a live worker, never
    requested, until beat settled them 330 s later as sent without an id."""
    claim_answer_lost(1)  # type: ignore[operator]
    gateway = CountingGateway()
    monkeypatch.setattr(sending, "get_adapter", lambda name: gateway)
    ids = add_rows(3)
    outcome = sending.send_messages(ids, lambda r, c: None)
    assert gateway.sent == Counter({i: 1 for i in ids})
    assert outcome.claimed == 3 and outcome.sent == 3
    rows = rows_of(ids)
    assert {(r.status, r.attempts) for r in rows} == {("sent", 1)}
    assert all(r.provider_message_id == f"gw-{r.id}" for r in rows)


def test_a_claim_lost_for_longer_than_the_retry_is_taken_up_by_the_queued_again_task(
    sqlite_store: None, monkeypatch: pytest.MonkeyPatch, claim_answer_lost: object
) -> None:
    """Every try's commit lands and every answer is lost until the claim gives up and
    queues the task again: that task still sends each message, once."""
    hook = claim_answer_lost(1000)  # type: ignore[operator]
    monkeypatch.setattr(sending, "CLAIM_RETRY_SECONDS", 1.0)
    gateway = CountingGateway()
    monkeypatch.setattr(sending, "get_adapter", lambda name: gateway)
    ids = add_rows(2)
    requeued: list[tuple[list[str], float, str | None]] = []

    def requeue(r: list[str], c: float, token: str | None = None) -> None:
        requeued.append((list(r), c, token))

    first = sending.send_messages(ids, requeue)
    assert first.claimed == 0 and gateway.sent == Counter()
    assert [(r, c) for r, c, _t in requeued] == [(ids, sending.CLAIM_REQUEUE_SECONDS)]
    hook.left = 0  # the store answers again
    [(again_ids, _c, token)] = requeued
    again = sending.send_messages(again_ids, lambda r, c, t=None: None, claim_token=token)
    assert again.sent == 2 and gateway.sent == Counter({i: 1 for i in ids})
    assert {(r.status, r.attempts) for r in rows_of(ids)} == {("sent", 1)}


def test_a_claim_token_does_not_take_rows_another_claim_holds(sqlite_store: None) -> None:
    """A token only re-takes the rows claimed under it: a second task with another
    token finds a `sending` row taken and leaves it (fencing)."""
    from worker.store.transitions import claim_many

    ids = add_rows(2)
    with db.session() as s:
        assert [r.id for r in claim_many(s, ids, sending.utcnow(), "token-a")] == ids
        s.commit()
    with db.session() as s:
        assert claim_many(s, ids, sending.utcnow(), "token-b", retake=True) == []
        assert claim_many(s, ids, sending.utcnow(), "token-a") == []  # not without retake
        assert [r.id for r in claim_many(s, ids, sending.utcnow(), "token-a", retake=True)] == ids
        s.commit()
    assert {(r.status, r.attempts, r.claim_token) for r in rows_of(ids)} == {
        ("sending", 1, "token-a")
    }


def test_the_store_stopping_between_the_claim_and_the_request_loses_nothing(
    pg: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault suite's "store unreachable" case, reduced: PostgreSQL stops just
    after the claim commits and starts again 2 s later; every message is sent once."""
    from sqlalchemy import event
    from sqlmodel import Session

    from worker.store import transitions

    real_claim_many = transitions.claim_many
    state = {"armed": False, "done": False}

    def claim_many(*args: object, **kwargs: object) -> list[object]:
        state["armed"] = True
        return real_claim_many(*args, **kwargs)  # type: ignore[arg-type]

    def after_commit(_session: object) -> None:
        if state["armed"] and not state["done"]:
            state["done"] = True
            pg.down()
            threading.Timer(2.0, pg.up).start()

    monkeypatch.setattr(sending, "claim_many", claim_many)
    event.listen(Session, "after_commit", after_commit)
    try:
        gateway = CountingGateway()
        monkeypatch.setattr(sending, "get_adapter", lambda name: gateway)
        ids = add_rows(3)
        outcome = sending.send_messages(ids, lambda r, c, t=None: None)
    finally:
        event.remove(Session, "after_commit", after_commit)
    assert state["done"]
    assert gateway.sent == Counter({i: 1 for i in ids})
    assert outcome.sent == 3
    assert {(r.status, r.attempts) for r in rows_of(ids)} == {("sent", 1)}


def test_an_answer_whose_first_commit_fails_is_stored_from_a_fresh_read(
    sqlite_store: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer's first try uses the rows as the claim returned them; it changes them
    in memory (`sent`) and then its commit fails. The second try must read them again,
    or it would take them for already `sent` and leave them `sending` in the store."""
    from sqlalchemy import event
    from sqlmodel import Session

    from worker.sending import record

    left = {"n": 1}
    real = record._store_results

    def failing_once(*args: object, **kwargs: object) -> None:
        def before_commit(_session: object) -> None:
            if left["n"] > 0:
                left["n"] -= 1
                raise outage()

        event.listen(Session, "before_commit", before_commit)
        try:
            real(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            event.remove(Session, "before_commit", before_commit)

    monkeypatch.setattr(sending, "_store_results", failing_once)
    gateway = CountingGateway()
    monkeypatch.setattr(sending, "get_adapter", lambda name: gateway)
    ids = add_rows(3)
    outcome = sending.send_messages(ids, lambda r, c: None)
    assert left["n"] == 0  # the first commit did fail
    assert gateway.sent == Counter({i: 1 for i in ids})
    assert outcome.sent == 3
    rows = rows_of(ids)
    assert {(r.status, r.attempts) for r in rows} == {("sent", 1)}
    assert all(r.provider_message_id == f"gw-{r.id}" for r in rows)
