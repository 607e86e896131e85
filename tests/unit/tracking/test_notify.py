"""Status callbacks to the application: outbox rows written with the status change,
POSTed in order, retried with backoff, given up on 4xx or after the last attempt.

The store is real SQLite; the application is an `httpx.MockTransport` (this is a
unit test of the notifier alone; the integration test posts over real HTTP).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlmodel import select

from producer import db, verify_callback
from producer.models import AppNotification, Message
from producer.settings import reload_settings
from producer.status import Status
from tests.unit.conftest import isolate, restore
from worker.store.transitions import move
from worker.tracking import notify


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[list[list[int]]]:  # type: ignore[no-untyped-def]
    isolate(monkeypatch, tmp_path, SMSQ_APP_CALLBACK_MAX_ATTEMPTS="3")
    published: list[list[int]] = []
    monkeypatch.setattr(notify, "publish", lambda ids: published.append(list(ids)))
    yield published
    restore(monkeypatch)


def sent_row(callback_url: str | None = "https://app.example/sms-status") -> str:
    with db.session() as s:
        row = Message(
            to="243851234567",
            text="hi",
            provider="keccel",
            status="sending",
            callback_url=callback_url,
            attempts=1,
        )
        s.add(row)
        s.commit()
        mid = row.id
    return mid


def step(mid: str, new: Status, **fields) -> None:  # type: ignore[no-untyped-def]
    with db.session() as s:
        row = s.get(Message, mid)
        assert row is not None
        assert move(s, row, new, source="worker", **fields)
        s.commit()


def notes() -> list[AppNotification]:
    with db.session() as s:
        return list(s.exec(select(AppNotification).order_by(AppNotification.id)))  # type: ignore[arg-type]


class App:
    """A scripted application endpoint: answers in turn, records what it got."""

    def __init__(self, *answers: int | Exception, headers: dict[str, str] | None = None) -> None:
        self.answers = list(answers)
        self.headers = headers or {}
        self.got: list[dict[str, object]] = []
        self.raw: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.raw.append(request)
        self.got.append(json.loads(request.content))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer, headers=self.headers)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def test_every_status_change_writes_a_notification_published_after_commit(store) -> None:
    mid = sent_row()
    step(mid, Status.SENT, provider_message_id="55")
    step(mid, Status.DELIVERED)
    rows = notes()
    assert [json.loads(n.payload)["status"] for n in rows] == ["sent", "delivered"]
    assert store == [[rows[0].id], [rows[1].id]]
    body = json.loads(rows[1].payload)
    assert body["id"] == mid and body["provider"] == "keccel"
    assert body["previous_status"] == "sent" and body["error"] is None and body["time"]
    assert body["provider_message_id"] == "55"


def test_no_callback_url_no_notification_and_claim_churn_is_quiet(store) -> None:
    quiet = sent_row()
    step(quiet, Status.QUEUED)  # a hand-back between attempts
    loud = sent_row(callback_url=None)
    step(loud, Status.FAILED, error="boom")
    assert notes() == []
    assert store == []


def test_rolled_back_change_sends_nothing(store) -> None:
    mid = sent_row()
    with db.session() as s:
        row = s.get(Message, mid)
        assert row is not None
        move(s, row, Status.SENT, source="worker")
        s.rollback()
    assert notes() == [] and store == []


def test_delivered_in_order_with_event_ids(store) -> None:
    mid = sent_row()
    step(mid, Status.SENT)
    step(mid, Status.DELIVERED)
    app = App(200, 204)
    ids = [n.id for n in notes()]
    assert notify.deliver([ids[1]], client=app.client()) == {
        "delivered": 2,
        "pending": 0,
        "failed": 0,
    }
    assert [g["status"] for g in app.got] == ["sent", "delivered"]  # the earlier one first
    assert [g["event_id"] for g in app.got] == ids
    assert {n.state for n in notes()} == {"delivered"}


def test_server_error_is_retried_later_and_holds_back_the_next(store) -> None:
    mid = sent_row()
    step(mid, Status.SENT)
    step(mid, Status.DELIVERED)
    app = App(503)
    first, _second = notes()
    counts = notify.deliver([first.id], client=app.client())
    assert counts == {"delivered": 0, "pending": 1, "failed": 0}
    assert len(app.got) == 1  # "delivered" is not posted before "sent"
    a, b = notes()
    assert a.state == "pending" and a.attempts == 1 and a.last_error == "HTTP 503"
    assert a.next_attempt_at is not None and b.next_attempt_at == a.next_attempt_at


def test_retry_after_is_honoured(store) -> None:
    mid = sent_row()
    step(mid, Status.SENT)
    app = App(429, headers={"Retry-After": "120"})
    before = notify.utcnow()
    notify.deliver([notes()[0].id], client=app.client())
    (note,) = notes()
    assert note.next_attempt_at is not None
    wait = (note.next_attempt_at - before).total_seconds()
    assert 119 <= wait <= 125


def test_connection_error_then_success(store) -> None:
    mid = sent_row()
    step(mid, Status.SENT)
    app = App(httpx.ConnectError("refused"), 200)
    (note,) = notes()
    notify.deliver([note.id], client=app.client())
    assert notes()[0].state == "pending"
    notify.deliver([note.id], client=app.client())
    assert notes()[0].state == "delivered" and notes()[0].attempts == 2


def test_client_error_is_not_retried(store) -> None:
    mid = sent_row()
    step(mid, Status.SENT)
    app = App(404)
    notify.deliver([notes()[0].id], client=app.client())
    (note,) = notes()
    assert note.state == "failed" and note.attempts == 1 and note.last_error == "HTTP 404"


def test_gives_up_after_max_attempts(store) -> None:
    mid = sent_row()
    step(mid, Status.SENT)
    app = App(500, 500, 500, 200)
    (note,) = notes()
    for _ in range(4):
        notify.deliver([note.id], client=app.client())
    assert len(app.got) == 3  # SMSQ_APP_CALLBACK_MAX_ATTEMPTS=3
    assert notes()[0].state == "failed"


def test_callbacks_are_signed_with_time_under_the_app_secret(
    store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSQ_APP_CALLBACK_SECRET", "app-signing-key")
    monkeypatch.setenv("SMSQ_CALLBACK_SECRET", "dlr-token-key")
    reload_settings()
    mid = sent_row()
    step(mid, Status.SENT)
    app = App(200)
    before = int(time.time())
    notify.deliver([notes()[0].id], client=app.client())
    request = app.raw[0]
    stamp = request.headers["X-Smsq-Timestamp"]
    assert before <= int(stamp) <= time.time()
    signed = stamp.encode() + b"." + request.content
    expected = hmac.new(b"app-signing-key", signed, hashlib.sha256).hexdigest()
    assert request.headers["X-Smsq-Signature"] == f"sha256={expected}"
    assert verify_callback(request.content, request.headers, "app-signing-key")
    # the delivery-report secret signs nothing an app sees
    assert not verify_callback(request.content, request.headers, "dlr-token-key")
    assert b"app-signing-key" not in request.content


def test_without_an_app_secret_callbacks_go_unsigned_and_it_warns_once(
    store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SMSQ_CALLBACK_SECRET", "dlr-token-key")  # never reused for apps
    monkeypatch.setattr(notify, "_warned_unsigned", False)
    reload_settings()
    mid = sent_row()
    step(mid, Status.SENT)
    step(mid, Status.DELIVERED)
    app = App(200, 200)
    with caplog.at_level("WARNING", logger="smsq.notify"):
        notify.deliver([n.id for n in notes()], client=app.client())
    assert len(app.raw) == 2
    assert all("X-Smsq-Signature" not in r.headers for r in app.raw)
    assert sum("SMSQ_APP_CALLBACK_SECRET is unset" in r.getMessage() for r in caplog.records) == 1


def test_beat_queues_due_and_frees_stuck_ones(store) -> None:
    mid = sent_row()
    step(mid, Status.SENT)
    (note,) = notes()
    assert notify.queue_due(lambda ids: None) == 0  # leased at creation, not due yet
    with db.session() as s:
        row = s.get(AppNotification, note.id)
        assert row is not None
        row.next_attempt_at = notify.utcnow()
        s.add(row)
        s.commit()
    queued: list[list[int]] = []
    assert notify.queue_due(queued.append) == 1
    assert queued == [[note.id]]
    assert notify.queue_due(queued.append) == 0  # leased again: not twice


def test_an_unreachable_app_is_skipped_for_the_rest_of_the_run(store) -> None:
    first, second = sent_row(), sent_row()
    step(first, Status.SENT)
    step(second, Status.SENT)
    app = App(httpx.ConnectTimeout("slow"), 200)
    counts = notify.deliver([n.id for n in notes()], client=app.client())
    assert len(app.got) == 1  # the second message's POST waits for a later run
    assert counts == {"delivered": 0, "pending": 1, "failed": 0}
    assert [n.state for n in notes()] == ["pending", "pending"]
    assert sorted(n.attempts for n in notes()) == [0, 1]  # one tried, one left
