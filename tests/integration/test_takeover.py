"""Fast takeover: the tasks a SIGKILLed worker held unacked (prefetched, waiting for
a countdown) are sent by the surviving worker within a minute of the kill, not at
the sweep (set to 300 s here so it cannot be what saves them).

Its own stack: two worker processes (`w1@`, `w2@`) x 4 threads, beat, KING SMS PRO
limited to 20 requests/s (a backlog) and answering the first sends with 429 and
`Retry-After: 15`, so their rows are handed back with a 15 s countdown and the
workers hold those tasks unacked, unstarted. `w1` is SIGKILLed while it holds
some, and is not restarted. Counts are taken at the simulator.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from sqlmodel import select

from producer import db, send_sms
from producer.models import Message
from producer.queues import SEND_TASK, broker_url
from producer.status import Status
from tests.integration.conftest import book, running_stack, sim, wait_for
from worker.gateways.sandbox.base import Fault
from worker.ops.stack import Stack
from worker.resilience import takeover

pytestmark = pytest.mark.integration

N = 200
ENV = {
    "SMSQ_KINGSMS_RATE_LIMIT": "20",
    "SMSQ_TICK_SECONDS": "0.5",
    "SMSQ_POLL_SCHEDULE": "1,1,2,5,10",
    "SMSQ_SWEEP_AFTER_SECONDS": "300",
}


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("takeover"),
        delivery_seconds=0.5,
        worker_concurrency=4,
        workers=2,
        web=False,
        extra_env=ENV,
    ) as running:
        yield running


def owner_of(client: redis.Redis, pid: int) -> str | None:
    """The claim id (host:pid:random) of the worker process `pid`, once it has a record."""
    for raw in client.smembers(takeover.OWNERS):
        owner = raw.decode()
        if owner.split(":")[-2] == str(pid):
            return owner
    return None


def held_unclaimed(client: redis.Redis, owner: str) -> set[str]:
    """Message ids of the tasks `owner` holds unacked whose rows are still `queued`."""
    ids: set[str] = set()
    for value in client.hvals(takeover.KEY.format(owner)):
        tag, _at = takeover.parse(value)
        raw = client.hget("unacked", tag)
        if raw is None:
            continue
        payload = json.loads(raw)[0]
        if payload["headers"].get("task") == SEND_TASK:
            ids.update(json.loads(base64.b64decode(payload["body"]))[0][0])
    if not ids:
        return set()
    with db.session() as s:
        rows = s.exec(select(Message).where(Message.id.in_(list(ids)))).all()  # type: ignore[union-attr]
    return {r.id for r in rows if r.status == Status.QUEUED.value}


def test_a_killed_workers_held_tasks_are_sent_by_the_other_within_a_minute(two_workers) -> None:  # type: ignore[no-untyped-def]
    gateway = sim(two_workers, "kingsms")
    client = redis.Redis.from_url(broker_url())
    tag = uuid.uuid4().hex[:8]
    texts = [f"takeover {tag} #{i}" for i in range(N)]
    gateway.add_fault(
        Fault(status=429, body="Too Many Requests", headers={"Retry-After": "15"}, times=24)
    )
    ids = [send_sms(f"2289{i:06d}{1 + i % 7}", t, provider="kingsms") for i, t in enumerate(texts)]
    pid = two_workers.processes["w1"].pid

    def w1_holds_unclaimed() -> set[str]:
        owner = owner_of(client, pid)
        return held_unclaimed(client, owner) if owner else set()

    held = wait_for(w1_holds_unclaimed, timeout=30, every=0.05)
    two_workers.kill("w1")
    killed = time.time()

    terminal = {s.value for s in (Status.DELIVERED,)}

    def all_final() -> bool:
        with db.session() as s:
            got = Counter(s.exec(select(Message.status).where(Message.id.in_(ids))).all())  # type: ignore[union-attr]
        return sum(n for st, n in got.items() if st in terminal) == N

    try:
        wait_for(all_final, timeout=75, every=0.5)
    except AssertionError:
        with db.session() as s:
            got = Counter(s.exec(select(Message.status).where(Message.id.in_(ids))).all())  # type: ignore[union-attr]
        raise AssertionError(f"75 s after the kill: {dict(got)}") from None
    took = time.time() - killed
    with db.session() as s:
        rows = s.exec(select(Message).where(Message.id.in_(list(held)))).all()  # type: ignore[union-attr]
    sent_after = max(r.updated_at.timestamp() for r in rows) - killed
    logs = "".join(
        (two_workers.data_dir / "logs" / f"{n}.log").read_text(errors="replace")
        for n in ("w1", "w2")
    )
    print(
        f"\nw1 killed holding {len(held)} unclaimed message(s); all {N} delivered "
        f"{took:.1f} s after the kill; the held ones final {sent_after:.1f} s after it"
    )
    assert "stopped beating" in logs and "put back on their queues" in logs
    assert took <= 60.0
    assert book(two_workers, "kingsms", texts) == Counter({t: 1 for t in texts})  # none twice
