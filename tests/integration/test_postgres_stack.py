"""The whole stack on a PostgreSQL store (the embedded server of tests/pg.py).

Its own stack, as on two hosts sharing one store: two worker processes, beat,
web and the simulators, with SMSQ_DATABASE_URL a new PostgreSQL database.
Counts are taken at the simulator's book (one unique text per message).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from sqlmodel import select

from producer import db, send_bulk, send_sms
from producer.models import Message, MessageEvent
from tests.integration.conftest import TEST_ENV, book, running_stack, sim, wait_for
from tests.pg import EmbeddedPostgres
from worker.gateways.sandbox.base import Fault
from worker.ops.stack import Stack

pytestmark = pytest.mark.integration

SENT_OR_LATER = {"sent", "delivered", "undelivered", "expired"}
# The simulators choose a fate by the number's last digit.
FATES = {"7": "delivered", "0": "rejected", "9": "undelivered", "8": "expired"}
# Keccel and 1601SMS report an expired message as failed / NOT DELIVERED.
EXPIRED_AS = {"keccel": "undelivered", "sms1601": "undelivered"}
NUMBERS = {
    "keccel": "24385123456",
    "smsclub": "38098936113",
    "kingsms": "2289044367",
    "sms1601": "3161234567",
}


@pytest.fixture(scope="module")
def pg_stack(
    tmp_path_factory: pytest.TempPathFactory, postgres: EmbeddedPostgres
) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("pgstack"),
        delivery_seconds=0.5,
        worker_concurrency=2,
        workers=2,
        extra_env={**TEST_ENV, "SMSQ_DATABASE_URL": postgres.database("stack")},
    ) as running:
        assert db.get_engine().dialect.name == "postgresql"
        yield running
        assert not (running.data_dir / "smsq.db").exists()  # no process fell back to SQLite


def statuses(ids: list[str]) -> dict[str, str]:
    with db.session() as s:
        rows = s.exec(select(Message.id, Message.status).where(Message.id.in_(ids))).all()  # type: ignore[union-attr]
    return dict(rows)  # type: ignore[arg-type]


def wait_all(ids: list[str], wanted: set[str], timeout: float) -> None:
    try:
        wait_for(lambda: set(statuses(ids).values()) <= wanted, timeout=timeout, every=0.3)
    except AssertionError:
        raise AssertionError(f"after {timeout}s: {Counter(statuses(ids).values())}") from None


def store_errors(stack: Stack) -> list[str]:
    """Lines of the processes' logs that come from the PostgreSQL driver."""
    logs = stack.data_dir / "logs"
    return [
        line
        for path in logs.glob("*.log")
        for line in path.read_text(errors="replace").splitlines()
        if "psycopg" in line
    ]


def test_every_gateway_reaches_each_final_status_on_postgres(pg_stack: Stack) -> None:
    """Per gateway a delivered, a rejected, an undelivered and an expired message
    (SMSClub as one bulk request), each final as the simulator decided, each once
    in the gateway's book."""
    tag = uuid.uuid4().hex[:6]
    expected: dict[str, str] = {}
    sent: list[tuple[str, str, str, str]] = []  # provider, number, text, fate
    for provider, prefix in NUMBERS.items():
        numbers = [prefix + digit for digit in FATES]
        if provider == "smsclub":  # one bulk request
            texts = [f"pg bulk {tag}"] * len(numbers)
            ids = send_bulk(numbers, texts[0], provider=provider)
        else:
            texts = [f"pg {provider} {number} {tag}" for number in numbers]
            ids = [send_sms(n, t, provider=provider) for n, t in zip(numbers, texts, strict=True)]
        for mid, number, text, fate in zip(ids, numbers, texts, FATES.values(), strict=True):
            expected[mid] = EXPIRED_AS.get(provider, fate) if fate == "expired" else fate
            sent.append((provider, number, text, fate))
    wait_all(list(expected), set(FATES.values()), timeout=60)
    assert statuses(list(expected)) == expected
    booked = Counter(
        (provider, m.to, m.text)
        for provider in NUMBERS
        for m in list(sim(pg_stack, provider).messages.values())
    )
    for provider, number, text, fate in sent:  # once (a refused one: once at most)
        times = booked[(provider, number, text)]
        assert times == 1 or (fate == "rejected" and times == 0), (provider, number, times)
    assert store_errors(pg_stack) == []


def test_sigkill_of_a_worker_mid_send_loses_and_doubles_nothing_on_postgres(
    pg_stack: Stack,
) -> None:
    """Every worker thread holds a slow 1601SMS send when one worker process is
    SIGKILLed. Its claimed rows stay `sending` in PostgreSQL; its heartbeat stops,
    and beat settles them by itself about a minute after their claim (a lookup by
    reference; what the gateway never got would be sent again). Every message
    ends up sent, each exactly once at the gateway."""
    gateway = sim(pg_stack, "sms1601")
    threads = pg_stack.workers * pg_stack.worker_concurrency
    # The answers come 6 s after the requests; the store is down from when they are all
    # in flight until 2 s after the answers, however long stopping it takes on a busy
    # machine (a 3 s hold once let the answers in before the stop had finished).
    gateway.add_fault(Fault(delay=6.0, passthrough=True, times=threads))
    started = time.time()
    texts = [f"pg kill {uuid.uuid4().hex[:8]} #{i}" for i in range(16)]
    ids = [
        send_sms(f"3161{i:06d}{1 + i % 7}", text, provider="sms1601")
        for i, text in enumerate(texts)
    ]

    def all_threads_in_flight() -> bool:
        arrived = [r for r in list(gateway.requests) if r.at >= started]
        return len(arrived) >= threads and Counter(statuses(ids).values())["sending"] == threads

    wait_for(all_threads_in_flight, timeout=30)
    pg_stack.kill("w1")
    held = pg_stack.worker_concurrency
    try:
        wait_for(
            lambda: (
                sum(1 for st in statuses(ids).values() if st in SENT_OR_LATER) == len(ids) - held
            ),
            timeout=60,
            every=0.3,
        )
        with db.session() as s:  # the dead worker's claims: beat settles them, nobody ages them
            stuck = s.exec(
                select(Message).where(
                    Message.id.in_(ids),  # type: ignore[union-attr]
                    Message.status == "sending",
                )
            ).all()
        assert len(stuck) == held
        wait_all(ids, SENT_OR_LATER, timeout=120)  # about liveness.DEAD_AFTER after the claim
    finally:
        pg_stack.restart("w1")
    assert book(pg_stack, "sms1601", texts) == Counter({t: 1 for t in texts})
    with db.session() as s:
        settled = s.exec(
            select(MessageEvent.message_id).where(
                MessageEvent.message_id.in_([r.id for r in stuck]),  # type: ignore[union-attr]
                MessageEvent.kind == "reconcile",
            )
        ).all()
    assert sorted(settled) == sorted(r.id for r in stuck)  # each looked up once by beat
    assert store_errors(pg_stack) == []


def test_store_stopped_mid_run_loses_nothing_and_keeps_every_gateway_id(
    pg_stack: Stack, postgres: EmbeddedPostgres
) -> None:
    """PostgreSQL stopped (every connection cut) while SMSClub holds eight requests for
    6 s, and started again 2 s after their answers: the workers keep those answers until the
    store takes them, so every message is sent exactly once, with its gateway id
    (nothing settled as an uncertain send), and the web process answers 503, not
    500, while the store is down."""
    gateway = sim(pg_stack, "smsclub")
    threads = pg_stack.workers * pg_stack.worker_concurrency
    tag = uuid.uuid4().hex[:8]
    texts = [f"pg down {tag} #{i}" for i in range(30)]
    ids = [
        send_sms(f"38067{i:06d}{1 + i % 7}", text, provider="smsclub")
        for i, text in enumerate(texts)
    ]
    started = time.time()
    # The answers come 6 s after the requests; the store is down from when they are all
    # in flight until 2 s after the answers, however long stopping it takes on a busy
    # machine (a 3 s hold once let the answers in before the stop had finished).
    gateway.add_fault(Fault(delay=6.0, passthrough=True, times=threads))

    def all_threads_in_flight() -> bool:
        return sum(1 for r in list(gateway.requests) if r.at >= started) >= threads

    wait_for(all_threads_in_flight, timeout=30)
    postgres.down()
    try:
        health = httpx.get(f"{pg_stack.web_url}/healthz", timeout=10)
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert time.time() < started + 6.0, "the store stopped only after the answers came"
        time.sleep(max(0.0, started + 8.0 - time.time()))
    finally:
        postgres.up()
    wait_all(ids, SENT_OR_LATER, timeout=90)
    assert book(pg_stack, "smsclub", texts) == Counter({t: 1 for t in texts})
    with db.session() as s:
        rows = s.exec(select(Message).where(Message.id.in_(ids))).all()  # type: ignore[union-attr]
        uncertain = s.exec(
            select(MessageEvent.message_id).where(
                MessageEvent.message_id.in_(ids),  # type: ignore[union-attr]
                MessageEvent.kind == "reconcile",
            )
        ).all()
    assert all(r.provider_message_id for r in rows), [r.note for r in rows]
    assert uncertain == []
    logs = "\n".join(
        p.read_text(errors="replace") for p in (pg_stack.data_dir / "logs").glob("w*.log")
    )
    assert "store reachable again: storing the gateway's answer" in logs


def test_retention_masks_an_old_final_message_on_postgres(pg_stack: Stack) -> None:
    from tests.integration.test_retention import check_retention

    check_retention(pg_stack)
