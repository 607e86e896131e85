"""The shared Redis client, the limits' storage, redbeat and the rate limiter on a real
Sentinel group (`tests/sentinel.py`) through a failover: each reaches the promoted
replica, and the rate limiter grants nothing for one window after it saw the master
change (the new master may lack the last grants of the old one)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from redbeat.schedulers import get_redis

from producer.queues import broker_url
from tests.sentinel import SentinelGroup
from tests.unit.conftest import isolate, restore
from worker import redis_client
from worker.resilience.ratelimit import WINDOW_SECONDS, RateLimiter


@pytest.fixture
def group(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SentinelGroup]:
    with SentinelGroup(tmp_path / "redis") as running:
        isolate(monkeypatch, tmp_path, SMSQ_BROKER_URL=running.url)
        redis_client.forget()
        yield running
        redis_client.forget()
        restore(monkeypatch)


def until_it_answers(call, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """`call()` once the new master takes it (errors while the failover runs)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_shared_client_follows_the_master_and_the_limiter_holds_one_window(
    group: SentinelGroup,
) -> None:
    client = redis_client.shared()
    assert broker_url() == group.url
    client.set("before", "1")
    limiter = RateLimiter("acct", rate_per_second=5)
    assert limiter.try_acquire() == 0.0  # granted on the first master
    assert redis_client.failover_hold(WINDOW_SECONDS) == 0.0

    old = group.master_port()
    group.kill_primary()
    group.wait_promoted(old)
    assert until_it_answers(lambda: client.get("before")) == b"1"  # replicated, on the new one
    assert client.connection_pool.master_address[1] == group.master_port() != old

    held = limiter.try_acquire()  # the first ask after the change: no grant
    assert 0 < held <= WINDOW_SECONDS
    key = "smsq:rate:acct"
    taken = client.zcard(key)
    assert limiter.try_acquire() > 0  # still within the window: nothing asked of Redis
    assert client.zcard(key) == taken
    time.sleep(held + 0.05)
    assert limiter.try_acquire() == 0.0  # a window on: grants again


def test_the_limits_storage_and_redbeat_reach_the_promoted_replica(group: SentinelGroup) -> None:
    from limits import parse

    from producer import quotas
    from worker.celery_app import redbeat_settings

    url, options = redbeat_settings()
    assert url.startswith("redis-sentinel://")
    assert options["service_name"] == "mymaster" and len(options["sentinels"]) == 3
    app = Celery("redbeat-test")
    app.conf.update(redbeat_redis_url=url, redbeat_redis_options=options)
    beat_client = get_redis(app)  # redbeat's own road to its client
    item = parse("100/minute")
    assert quotas.limiter().hit(item, "test", "k")
    old = group.master_port()
    group.kill_primary()
    group.wait_promoted(old)
    assert until_it_answers(lambda: quotas.limiter().hit(item, "test", "k"))
    assert until_it_answers(lambda: beat_client.set("smsq:test:beat", "1"))
