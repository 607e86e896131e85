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
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    limiter = RateLimiter("down", 5, client=dead)
    assert limiter.acquire(max_wait=0.3) > 0
