"""A status outage does not use up the poll schedule: failed polls back off and retry.

`worker.tracking.polling.poll_messages` on a real SQLite store; only the gateway is fake.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta

import pytest

from producer import db
from producer.models import Message, utcnow
from producer.status import Status
from tests.unit.conftest import isolate, restore
from worker.gateways.base import PermanentProviderError, RetryableProviderError, StatusReport
from worker.tracking import polling

SCHEDULE = [30.0, 60.0, 120.0]


class StatusGateway:
    """Answers each status request with the next queued answer (an exception or a status)."""

    max_status_batch = 2

    def __init__(self) -> None:
        self.answers: list[Exception | Status] = []
        self.asked: list[list[str]] = []

    def fetch_status(self, ids: Sequence[str]) -> list[StatusReport]:
        self.asked.append(list(ids))
        answer = self.answers.pop(0) if self.answers else Status.SENT
        if isinstance(answer, Exception):
            raise answer
        final = answer if answer is not Status.SENT else None  # ENROUTE: nothing new
        raw = "DELIVRD" if answer is Status.DELIVERED else "ENROUTE"
        return [StatusReport(i, final, raw, raw={i: raw}) for i in ids]


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[StatusGateway]:
    isolate(
        monkeypatch,
        tmp_path,
        SMSQ_SMSCLUB_TOKEN="t",
        SMSQ_POLL_SCHEDULE=",".join(f"{d:g}" for d in SCHEDULE),
    )
    fake = StatusGateway()
    monkeypatch.setattr(polling, "get_adapter", lambda name: fake)
    yield fake
    restore(monkeypatch)


def sent_row(n: int = 1, sent_ago: float = 60.0) -> str:
    sent = utcnow() - timedelta(seconds=sent_ago)
    row = Message(
        to="380671234567",
        text=f"code {n}",
        provider="smsclub",
        status=Status.SENT.value,
        provider_message_id=f"gw-{n}",
        sent_at=sent,
        created_at=sent,
        next_poll_at=utcnow(),
    )
    with db.session() as s:
        s.add(row)
        s.commit()
    return row.id


def load(mid: str) -> Message:
    with db.session() as s:
        found = s.get(Message, mid)
    assert found is not None
    return found


def seconds_to_next_poll(row: Message) -> float:
    assert row.next_poll_at is not None
    return (row.next_poll_at - utcnow()).total_seconds()


def test_failed_polls_back_off_without_using_the_schedule(gateway: StatusGateway) -> None:
    mid = sent_row()
    gateway.answers = [RetryableProviderError("smsclub: HTTP 503")] * 4
    waits = []
    for _ in range(4):
        polling.poll_messages("smsclub", [mid])
        row = load(mid)
        waits.append(round(seconds_to_next_poll(row)))
    assert waits == [5, 10, 20, 40]
    assert row.poll_count == 0 and row.poll_failures == 4
    assert row.status == Status.SENT.value
    assert row.note == "status poll failed 4 time(s) in a row, asked again: smsclub: HTTP 503"


def test_an_answered_poll_takes_the_next_step_and_clears_the_failures(
    gateway: StatusGateway,
) -> None:
    mid = sent_row()
    gateway.answers = [PermanentProviderError("smsclub: HTTP 401"), Status.SENT, Status.SENT]
    polling.poll_messages("smsclub", [mid])
    assert load(mid).poll_failures == 1
    polling.poll_messages("smsclub", [mid])
    row = load(mid)
    assert (row.poll_count, row.poll_failures, row.note) == (1, 0, None)
    assert round(seconds_to_next_poll(row)) == SCHEDULE[1]
    polling.poll_messages("smsclub", [mid])
    assert round(seconds_to_next_poll(load(mid))) == SCHEDULE[2]


def test_the_schedule_ends_only_with_answered_polls(gateway: StatusGateway) -> None:
    mid = sent_row()
    gateway.answers = [
        Status.SENT,
        RetryableProviderError("down"),
        RetryableProviderError("down"),
        Status.SENT,
        Status.SENT,
    ]
    for _ in range(4):
        polling.poll_messages("smsclub", [mid])
        assert load(mid).next_poll_at is not None
    polling.poll_messages("smsclub", [mid])
    row = load(mid)
    assert row.next_poll_at is None and row.poll_count == len(SCHEDULE)
    assert row.note == "no final status after 3 polls over 210s; left sent"


def test_a_final_status_after_an_outage_is_applied(gateway: StatusGateway) -> None:
    mid = sent_row()
    gateway.answers = [RetryableProviderError("down"), Status.DELIVERED]
    polling.poll_messages("smsclub", [mid])
    assert polling.poll_messages("smsclub", [mid]) == 1
    row = load(mid)
    assert row.status == Status.DELIVERED.value and row.next_poll_at is None


def test_only_the_rows_of_a_failed_request_count_a_failure(gateway: StatusGateway) -> None:
    ids = [sent_row(n) for n in range(3)]  # two requests: 2 ids, then 1
    gateway.answers = [Status.SENT, RetryableProviderError("down")]
    polling.poll_messages("smsclub", ids)
    asked = {i for batch in gateway.asked for i in batch}
    assert asked == {"gw-0", "gw-1", "gw-2"}
    rows = [load(m) for m in ids]
    by_pid = {r.provider_message_id: (r.poll_count, r.poll_failures) for r in rows}
    failed_pid = gateway.asked[1][0]
    assert by_pid.pop(failed_pid) == (0, 1)
    assert set(by_pid.values()) == {(1, 0)}


def test_failed_polls_give_up_two_days_after_the_send(gateway: StatusGateway) -> None:
    mid = sent_row(sent_ago=polling.POLL_GIVE_UP.total_seconds() + 60)
    gateway.answers = [RetryableProviderError("smsclub: HTTP 503")]
    polling.poll_messages("smsclub", [mid])
    row = load(mid)
    assert row.next_poll_at is None and row.status == Status.SENT.value
    assert row.note == (
        "no final status: status polls failed 1 time(s) in a row until 48 h after the send; "
        "left sent (last error: smsclub: HTTP 503)"
    )


@pytest.mark.parametrize(
    ("failures", "delay"), [(1, 5), (2, 10), (6, 160), (7, 320), (8, 600), (50, 600)]
)
def test_failed_poll_backoff_doubles_to_its_cap(failures: int, delay: float) -> None:
    assert polling.failed_poll_delay(failures) == delay


def test_polls_the_broker_would_not_take_are_due_again_soon_not_after_the_lease(
    gateway: StatusGateway,
) -> None:
    """The tick leases due polls for POLL_LEASE_SECONDS (120 s); when publishing the
    poll task fails (Redis down), the lease is given back: due again in 5 s."""
    from worker.resilience import sweeps as maintenance

    mid = sent_row()

    def broker_down(provider: str, ids: list[str]) -> None:
        raise ConnectionError("Redis went away")

    before = utcnow()
    maintenance._queue_due_polls(broker_down)
    with db.session() as s:
        row = s.get(Message, mid)
    assert row is not None and row.next_poll_at is not None
    due_in = (row.next_poll_at - before).total_seconds()
    assert maintenance.GIVE_BACK_SECONDS - 1 <= due_in <= maintenance.GIVE_BACK_SECONDS + 1

    queued: list[tuple[str, list[str]]] = []
    maintenance._queue_due_polls(lambda p, ids: queued.append((p, ids)))  # not due yet
    assert queued == []
    with db.session() as s:
        row = s.get(Message, mid)
        assert row is not None
        row.next_poll_at = utcnow()
        s.add(row)
        s.commit()
    maintenance._queue_due_polls(lambda p, ids: queued.append((p, ids)))
    assert queued == [("smsclub", [mid])]
