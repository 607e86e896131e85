"""Workers on hosts of their own: a partitioned host, and the PostgreSQL primary lost.

Its own stack: each of two workers in a Linux network namespace with its own
address (tests/hosts.py), reaching Redis, the store and the simulators over a veth
pair; beat and web on this machine; the store a PostgreSQL primary with a
synchronous standby, named by a multi-host URL with
`target_session_attrs=read-write` (tests/pg.py). Counts are taken at the
simulator's book (one unique text per message). The short version of `make
faults`' hosts stack (bench/faults.py).

1. w1's host is cut off (its veth down) while it holds the gateway's answers, for
   longer than its heartbeat: beat settles its claims, w2 sends its messages (the
   gateway refuses the copies, 453), and only then is the host healed. w1 comes
   back with its answers: each write is refused by the claim-token fence, and no
   row changes.
2. The primary is SIGKILLed mid-run and the standby promoted: every id send_sms
   returned is on it, every message sent once.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import select

from producer import StoreUnavailable, db, send_sms
from producer.models import Message, MessageEvent
from tests import hosts as netns
from tests.integration.conftest import TEST_ENV, book, running_stack, sim, wait_for
from tests.pg import Replicated, replicated
from worker.gateways.sandbox.base import Fault
from worker.ops.stack import Placement, Stack

pytestmark = pytest.mark.integration

ENV = {
    **TEST_ENV,
    "SMSQ_SMSCLUB_TIMEOUT_SECONDS": "2",
    "SMSQ_SWEEP_AFTER_SECONDS": "20",
    "SMSQ_RETRY_CAP_SECONDS": "5",
}
THREADS = 2  # per worker
FINAL = {"sent", "delivered"}
REFUSED = "not applied: this worker's claim was settled meanwhile"


@pytest.fixture(scope="module")
def hosts() -> Iterator[netns.Hosts]:
    reason = netns.why_unavailable()
    if reason:
        pytest.fail(f"workers as hosts need network namespaces: {reason}")
    with netns.Hosts(2) as made:
        yield made
    assert netns.ours() == []  # every namespace (and with it its veth pair) removed


@pytest.fixture(scope="module")
def pair(hosts: netns.Hosts) -> Iterator[Replicated]:
    made = replicated(listen=tuple(hosts.outer_addresses), network=f"{hosts.subnet}.0/24")
    yield made
    made.stop()


@pytest.fixture(scope="module")
def host_stack(
    tmp_path_factory: pytest.TempPathFactory, hosts: netns.Hosts, pair: Replicated
) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("hosts"),
        delivery_seconds=0.5,
        worker_concurrency=THREADS,
        workers=2,
        extra_env={**ENV, "SMSQ_DATABASE_URL": pair.database("hosts")},
        listen=tuple(hosts.outer_addresses),
        placements={f"w{h.index}": Placement(tuple(h.wrap([])), h.outer) for h in hosts.hosts},
    ) as running:
        yield running


NUMBERS = {"smsclub": "38067", "keccel": "24385"}


def send(n: int, provider: str, prefix: str) -> dict[str, str]:
    """n single sends, each its own text (numbers ending 1..7: delivered); id -> text."""
    tag = uuid.uuid4().hex[:6]
    sent = {}
    for i in range(n):
        body = f"{prefix} {tag} #{i}"
        number = f"{NUMBERS[provider]}{i:06d}{1 + i % 7}"
        sent[send_sms(number, body, provider=provider)] = body
    return sent


def rows(ids: list[str]) -> dict[str, dict[str, Any]]:
    with db.session() as s:
        found = s.exec(select(Message).where(Message.id.in_(ids))).all()  # type: ignore[union-attr]
    return {r.id: r.model_dump() for r in found}


def refused(ids: list[str]) -> int:
    with db.session() as s:
        notes = s.exec(
            select(MessageEvent.note).where(
                MessageEvent.message_id.in_(ids),  # type: ignore[union-attr]
                MessageEvent.applied == False,  # noqa: E712
            )
        ).all()
    return sum(1 for n in notes if n and n.startswith(REFUSED))


def all_final(ids: list[str]) -> bool:
    got = rows(ids)
    return len(got) == len(ids) and all(
        r["status"] in FINAL and (r["status"] == "delivered" or r["next_poll_at"] is None)
        for r in got.values()
    )


def test_a_host_back_from_a_partition_with_its_answers_changes_no_row(
    host_stack: Stack, hosts: netns.Hosts
) -> None:
    smsclub = sim(host_stack, "smsclub")
    sent = send(30, "smsclub", "partition")
    ids = list(sent)
    wait_for(lambda: len(smsclub.requests) >= 6, timeout=30, every=0.02)
    seen = len(smsclub.requests)
    hang = Fault(delay=1.5, passthrough=True, times=2 * THREADS)  # every thread's next send
    smsclub.add_fault(hang)
    wait_for(lambda: not any(f is hang for f in smsclub.faults), timeout=15, every=0.01)
    w1 = hosts[1]
    with db.get_engine().connect() as conn:
        # The answers come in while the store is locked: w1 holds them when cut off.
        conn.execute(text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
        time.sleep(2.0)
        held = sum(1 for r in list(smsclub.requests)[seen:] if r.client == w1.inner)
        w1.cut()
        conn.rollback()
    try:
        assert held >= 1, "w1 held no request when it was cut off"
        # Beat settles w1's claims once its heartbeat is gone (about a minute after
        # the claim), w2 resends them while SMSClub still refuses a copy: all final
        # while w1 is still cut off, holding its answers.
        wait_for(lambda: all_final(ids), timeout=150, every=0.5)
        before = rows(ids)
    finally:
        w1.heal()
    wait_for(lambda: refused(ids) >= held, timeout=90, every=0.5)
    time.sleep(1.0)
    assert refused(ids) == held
    assert rows(ids) == before  # w1's answers changed nothing
    copies = book(host_stack, "smsclub", list(sent.values()))
    assert copies == Counter({body: 1 for body in sent.values()})  # each sent once
    log = (host_stack.data_dir / "logs" / "w1.log").read_text(errors="replace")
    assert log.count("stale write (-> sent) not applied") == held


def test_the_primary_lost_and_the_standby_promoted_lose_no_message(
    host_stack: Stack, pair: Replicated
) -> None:
    keccel = sim(host_stack, "keccel")
    sent = send(20, "keccel", "failover")
    wait_for(lambda: len(keccel.requests) >= 5, timeout=30, every=0.02)
    assert pair.primary.kill() > 1
    down = time.monotonic()
    with pytest.raises(StoreUnavailable):
        send_sms("243851234567", "during the failover", provider="keccel", idempotency_key="ha")
    time.sleep(max(0.0, 2.0 - (time.monotonic() - down)))
    pair.standby.promote()
    mid = send_sms("243851234567", "during the failover", provider="keccel", idempotency_key="ha")
    sent[mid] = "during the failover"
    ids = list(sent)
    wait_for(lambda: all_final(ids), timeout=60, every=0.5)
    assert len(rows(ids)) == len(ids)  # every id send_sms returned is on the standby
    copies = book(host_stack, "keccel", list(sent.values()))
    assert copies == Counter({body: 1 for body in sent.values()})
    assert pair.standby.execute("SELECT pg_is_in_recovery()") == [(False,)]
