"""The global rate limiter against a real Redis (the embedded server binary).

The property is the gateway's: however late a request arrives between its
grant and its response, no 1-second window of arrivals holds more than R.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from producer.embedded_redis import ensure_embedded_redis, stop_embedded_redis
from worker.gateways.sandbox.base import max_in_window
from worker.resilience.ratelimit import RateLimiter


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    data_dir: Path = tmp_path_factory.mktemp("ratelimit")
    url = ensure_embedded_redis(data_dir)
    conn = redis.Redis.from_url(url)
    try:
        yield conn
    finally:
        conn.close()
        stop_embedded_redis(data_dir)


def test_arrivals_anywhere_between_grant_and_response_never_exceed_r(client) -> None:  # type: ignore[no-untyped-def]
    """Eight senders share one limiter; each request 'arrives' at a random point of a
    random latency (0-60 ms). Spacing grants 1/R apart would fail this."""
    rate = 10
    key = f"prop-{random.random()}"
    arrivals: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 3.2

    def sender(seed: int) -> None:
        rng = random.Random(seed)
        limiter = RateLimiter(key, rate, client=client, hold=5)
        while time.monotonic() < stop_at:
            if limiter.acquire(max_wait=2.0) > 0:
                continue
            latency = rng.uniform(0, 0.06)
            arrive = rng.uniform(0, latency)
            time.sleep(arrive)
            with lock:
                arrivals.append(time.time())
            time.sleep(latency - arrive)
            limiter.stamp()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(arrivals) >= 2 * rate  # there was a backlog to limit
    assert max_in_window(arrivals) <= rate


def test_a_request_in_flight_keeps_its_slot_until_answered(client) -> None:  # type: ignore[no-untyped-def]
    limiter = RateLimiter(f"flight-{random.random()}", 2, client=client, hold=30)
    results: list[float] = []

    def one() -> None:  # each grant from its own thread, none answered yet
        results.append(limiter.try_acquire())

    for _ in range(2):
        t = threading.Thread(target=one)
        t.start()
        t.join()
        time.sleep(0.45)  # past the minimum spacing (0.8 / R)
    assert results == [0.0, 0.0]
    time.sleep(1.1)  # a spaced-only limiter would have a slot again by now
    wait, in_flight = limiter._try()
    assert wait > 0 and in_flight


def test_a_dead_senders_slot_frees_after_hold(client) -> None:  # type: ignore[no-untyped-def]
    limiter = RateLimiter(f"dead-{random.random()}", 1, client=client, hold=1.0)
    t = threading.Thread(target=limiter.try_acquire)  # granted, never stamped: a dead worker
    t.start()
    t.join()
    assert limiter.try_acquire() > 0
    time.sleep(2.1)  # hold (1 s) + one window
    assert limiter.try_acquire() == 0.0


def test_stamped_slot_frees_one_window_after_the_answer(client) -> None:  # type: ignore[no-untyped-def]
    limiter = RateLimiter(f"stamp-{random.random()}", 1, client=client, hold=30)
    assert limiter.try_acquire() == 0.0
    limiter.stamp()
    wait, in_flight = limiter._try()
    assert 0.5 < wait <= 1.0 and not in_flight
    time.sleep(wait + 0.02)
    assert limiter.try_acquire() == 0.0


def test_redis_down_is_a_wait_not_an_error() -> None:
    # No retries: redis-py 7 retries a refused connection 3 times over about 7 s.
    dead = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    limiter = RateLimiter("down", 5, client=dead)
    assert limiter.acquire(max_wait=0.3) > 0


def _contend(client, key: str, ranks: dict[str, int], rate: float, seconds: float):  # type: ignore[no-untyped-def]
    """Senders of the given ranks (name -> rank) take slots for `seconds`, each request
    answered at once; returns the grants in order, as (time, name)."""
    grants: list[tuple[float, str]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def sender(name: str, rank: int) -> None:
        limiter = RateLimiter(key, rate, client=client, hold=5)
        while time.monotonic() < stop_at:
            if limiter.acquire(max_wait=5.0, rank=rank) > 0:
                continue
            with lock:
                grants.append((time.monotonic(), name))
            limiter.stamp()

    threads = [threading.Thread(target=sender, args=item) for item in ranks.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return grants


def test_a_waiting_high_request_takes_every_slot_before_normal_and_bulk(client) -> None:  # type: ignore[no-untyped-def]
    """Six bulk senders, two normal and one high contend for 10/s: while the high one
    keeps asking, no other rank is granted after its first wait; normal holds back
    bulk the same way."""
    key = f"prio-{random.random()}"
    senders = {f"bulk{n}": 2 for n in range(6)} | {"normal0": 1, "normal1": 1, "high": 0}
    grants = _contend(client, key, senders, rate=10, seconds=2.5)
    names = [name for _at, name in grants]
    last_high = len(names) - 1 - names[::-1].index("high")
    # Only the first slot can go to another rank (taken before the high sender had
    # registered); while it keeps asking, the high sender holds every slot.
    assert names[1 : last_high + 1] == ["high"] * last_high, names
    assert last_high >= 20, names  # about 10/s for 2.5 s
    # When it stops, the normal senders (waiting all along) go before any bulk one.
    after = [n for n in names[last_high + 1 :] if not n.startswith("high")]
    assert after[:2] == ["normal0", "normal1"] or after[:2] == ["normal1", "normal0"], names


def test_bulk_uses_every_slot_when_no_better_rank_waits(client) -> None:  # type: ignore[no-untyped-def]
    """Registering waiters costs the backlog nothing: bulk alone keeps the full rate."""
    key = f"prio-alone-{random.random()}"
    grants = _contend(client, key, {f"bulk{n}": 2 for n in range(4)}, rate=10, seconds=3.0)
    # (The limit itself is the property test's, above: here only the use of it.)
    assert len(grants) >= 28, len(grants)  # 10/s for 3 s, the first second full


def test_a_waiter_that_gives_up_stops_holding_back_worse_ranks(client) -> None:  # type: ignore[no-untyped-def]
    key = f"prio-leave-{random.random()}"
    high = RateLimiter(key, 1, client=client, hold=5)
    bulk = RateLimiter(key, 1, client=client, hold=5)
    assert high.acquire(0.0, rank=0) == 0  # the slot of this second
    high.stamp()
    assert high.acquire(0.0, rank=0) > 0  # waits: registered, then gives up and leaves
    assert client.zcard(high.waiting_keys[0]) == 0
    time.sleep(1.05)
    assert bulk.acquire(0.5, rank=2) == 0


def test_a_dead_waiter_lapses_after_its_grace(client) -> None:  # type: ignore[no-untyped-def]
    key = f"prio-dead-{random.random()}"
    high = RateLimiter(key, 2, client=client, hold=5)
    bulk = RateLimiter(key, 2, client=client, hold=5)
    assert high.acquire(0.0, rank=0) == 0
    high.stamp()
    wait = high.try_acquire(rank=0)  # registers as a waiter and never polls again
    assert wait > 0
    started = time.monotonic()
    assert bulk.acquire(5.0, rank=2) == 0
    held = time.monotonic() - started
    assert wait + 0.3 < held < wait + 0.5 + 0.8 + 0.3, (wait, held)  # grace 0.5, gap 0.4


def test_stop_waiting_ends_every_wait_at_once(client) -> None:  # type: ignore[no-untyped-def]
    from worker.resilience import ratelimit

    key = f"prio-stop-{random.random()}"
    limiter = RateLimiter(key, 0.2, client=client, hold=5)
    assert limiter.acquire(0.0) == 0
    limiter.stamp()
    threading.Timer(0.3, ratelimit.stop_waiting).start()
    started = time.monotonic()
    try:
        assert limiter.acquire(8.0) > 0
        assert time.monotonic() - started < 1.0
    finally:
        ratelimit._stopping.clear()
