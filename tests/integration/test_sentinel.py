"""Redis Sentinel: the broker's primary SIGKILLed mid-run, the replica promoted, and
nothing lost, nothing sent twice, no second over the rate limit, no process exiting.

A Sentinel group of real `redis-server` processes (`tests/sentinel.py`: primary,
replica, three sentinels) and a stack of its own on it (SMSQ_BROKER_URL in
Celery's form `sentinel://h1:p1;sentinel://h2:p2;sentinel://h3:p3`): two workers, one
beat, KING SMS PRO limited to 20 requests/s. Counts are taken at the simulator.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlmodel import select

from producer import db, send_sms
from producer.models import Message
from tests.integration.conftest import book, running_stack, sim, wait_for
from tests.sentinel import SentinelGroup
from worker import redis_client
from worker.gateways.sandbox.base import max_in_window
from worker.ops.stack import Stack

pytestmark = pytest.mark.integration

N = 300
RATE = 20
ENV = {
    "SMSQ_KINGSMS_RATE_LIMIT": str(RATE),
    "SMSQ_TICK_SECONDS": "0.5",
    "SMSQ_POLL_SCHEDULE": "1,1,2,5,10",
    "SMSQ_SWEEP_AFTER_SECONDS": "20",
}


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    with SentinelGroup(tmp_path_factory.mktemp("sentinel")) as running:
        yield running


@pytest.fixture(scope="module")
def on_sentinel(group: SentinelGroup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("sentinel-stack"),
        broker=group.url,
        delivery_seconds=0.5,
        worker_concurrency=4,
        workers=2,
        web=False,
        extra_env=ENV,
    ) as running:
        yield running


def statuses(ids: list[str]) -> Counter[str]:
    with db.session() as s:
        return Counter(s.exec(select(Message.status).where(Message.id.in_(ids))).all())  # type: ignore[union-attr]


def test_every_redis_use_follows_the_master_through_a_failover(on_sentinel, group) -> None:  # type: ignore[no-untyped-def]
    gateway = sim(on_sentinel, "kingsms")
    tag = uuid.uuid4().hex[:8]
    texts = [f"sentinel {tag} #{i}" for i in range(N)]
    started = time.time()
    ids = [send_sms(f"2289{i:06d}{1 + i % 7}", t, provider="kingsms") for i, t in enumerate(texts)]
    wait_for(lambda: sum(book(on_sentinel, "kingsms", texts).values()) >= N // 3, timeout=60)

    old = group.master_port()
    group.kill_primary()
    killed = time.time()
    promoted = group.wait_promoted(old)
    during = [  # the app keeps calling send_sms through the failover
        send_sms(f"2289{N + i:06d}{1 + i % 7}", f"sentinel {tag} late #{i}", provider="kingsms")
        for i in range(10)
    ]
    texts += [f"sentinel {tag} late #{i}" for i in range(10)]
    ids += during

    try:
        wait_for(lambda: statuses(ids)["delivered"] == len(ids), timeout=120, every=0.5)
    except AssertionError:
        raise AssertionError(f"after 120 s: {dict(statuses(ids))}") from None
    took = time.time() - killed
    requests = [
        r.at for r in list(gateway.requests) if r.at >= started and r.path.endswith("/sms/send")
    ]
    client = redis_client.shared()  # this process's client follows the master too
    assert client.ping()
    assert client.connection_pool.master_address[1] != old
    print(
        f"\nprimary killed with {N // 3}+ of {N} sent; replica promoted in {promoted:.1f} s; "
        f"all {len(ids)} delivered {took:.1f} s after the kill; max "
        f"{max_in_window(requests)} requests in any second (limit {RATE})"
    )
    assert book(on_sentinel, "kingsms", texts) == Counter({t: 1 for t in texts})  # none twice
    assert len(requests) == len(ids)  # and no request repeated
    assert max_in_window(requests) <= RATE
    exited = {
        name: p.returncode for name, p in on_sentinel.processes.items() if p.poll() is not None
    }
    assert exited == {}  # no worker or beat exited
    logs = "".join(
        (on_sentinel.data_dir / "logs" / f"{name}.log").read_text(errors="replace")
        for name in ("w1", "w2")
    )
    beat_log = (on_sentinel.data_dir / "logs" / "beat.log").read_text(errors="replace")
    assert "Sending due task smsq-tick" in beat_log.rsplit("Redis unavailable", 1)[-1]  # ticks on
    assert "the Redis master changed" in logs  # the limiter saw it, and held its grants
