"""The circuit breaker's state machine against a real Redis (the embedded server).

Real Redis because the breaker is Lua scripts on Redis `TIME`; two `Breaker`
objects with their own clients stand for two worker processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from producer.embedded_redis import ensure_embedded_redis, stop_embedded_redis
from worker.resilience.breaker import Breaker

COOLDOWN = 0.4


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("breaker-redis")
    url = ensure_embedded_redis(data_dir)
    yield url
    stop_embedded_redis(data_dir)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    c.flushdb()
    yield c
    c.close()


def make(client: redis.Redis, provider: str = "keccel", **kw: float) -> Breaker:
    options = {"failures": 3, "cooldown": COOLDOWN, "trial_lease": 5.0, **kw}
    return Breaker(provider, client, **options)  # type: ignore[arg-type]


def wait_cooldown(breaker: Breaker) -> None:
    time.sleep(breaker.snapshot().wait + 0.05)


def test_opens_after_n_failures_in_a_row_only(client: redis.Redis) -> None:
    breaker = make(client)
    assert breaker.allow().allowed and breaker.allow().state == "closed"
    assert breaker.record_failure() is None
    assert breaker.record_failure() is None
    breaker.record_success()  # the run is broken: count starts again
    assert breaker.record_failure() is None
    assert breaker.record_failure() is None
    assert breaker.snapshot().state == "closed"
    opened = breaker.record_failure()
    assert opened is not None and opened.state == "open"
    decision = breaker.allow()
    assert not decision.allowed and decision.state == "open"
    assert 0 < decision.wait <= COOLDOWN


def test_half_open_gives_exactly_one_trial_and_success_closes(client: redis.Redis) -> None:
    breaker = make(client)
    breaker.trip()
    other_process = make(redis.Redis(connection_pool=client.connection_pool))
    assert not other_process.allow().allowed  # shared state
    wait_cooldown(breaker)
    assert breaker.snapshot().state == "half_open"
    first = breaker.allow()
    assert first.allowed and first.trial
    second = other_process.allow()
    assert not second.allowed and second.state == "open"  # the trial is taken
    assert breaker.record_success() is True
    assert other_process.allow().state == "closed"
    assert breaker.record_success() is False  # already closed: no state change


def test_failed_trial_opens_again_for_a_full_cooldown(client: redis.Redis) -> None:
    breaker = make(client)
    breaker.trip()
    wait_cooldown(breaker)
    assert breaker.allow().trial
    reopened = breaker.record_failure()
    assert reopened is not None
    snap = breaker.snapshot()
    assert snap.state == "open" and snap.wait > COOLDOWN / 2
    assert not breaker.allow().allowed


def test_success_seen_while_open_does_not_close_it(client: redis.Redis) -> None:
    """A call that began before the breaker opened and succeeded late proves nothing."""
    breaker = make(client)
    breaker.trip(30)
    assert breaker.record_success() is False
    assert breaker.snapshot().state == "open"


def test_released_trial_goes_to_the_next_caller(client: redis.Redis) -> None:
    breaker = make(client)
    breaker.trip()
    wait_cooldown(breaker)
    assert breaker.allow().trial
    assert not breaker.allow().allowed
    breaker.release_trial()
    assert breaker.allow().trial


def test_a_dead_trial_worker_frees_the_trial_when_its_lease_lapses(client: redis.Redis) -> None:
    breaker = make(client, trial_lease=0.3)
    breaker.trip()
    wait_cooldown(breaker)
    assert breaker.allow().trial  # this "worker" dies without a word
    refused = breaker.allow()
    assert not refused.allowed and 0 < refused.wait <= 0.3
    time.sleep(0.35)
    assert breaker.allow().trial


def test_many_threads_in_half_open_get_one_trial(client: redis.Redis) -> None:
    breaker = make(client)
    breaker.trip()
    wait_cooldown(breaker)
    decisions = []
    lock = threading.Lock()

    def ask() -> None:
        d = make(redis.Redis(connection_pool=client.connection_pool)).allow()
        with lock:
            decisions.append(d)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for d in decisions if d.allowed) == 1


def test_providers_are_independent(client: redis.Redis) -> None:
    make(client, "keccel").trip(30)
    assert make(client, "sms1601").allow().state == "closed"
    assert make(client, "keccel").is_open()
    make(client, "keccel").reset()
    assert not make(client, "keccel").is_open()


def test_without_redis_calls_go_through() -> None:
    # No retries: redis-py 7 retries a refused connection 3 times over about 7 s.
    dead = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    breaker = make(dead)
    assert breaker.allow().allowed
    assert breaker.record_failure() is None
    assert breaker.snapshot().state == "closed"
