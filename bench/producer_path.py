"""The producer's side of `make bench` (issue 17): what a web app pays per call.

- `send_sms` from one thread: p50 and p99 of 500 calls (store insert + publish);
- `send_bulk` of 10,000 numbers in one call, best of three;
- `POST /v1/messages` (one number each) from 4 concurrent HTTP clients, requests/s.

The workers do not consume the send queues meanwhile (`pause`), so the figures are
the producer's alone; what was queued is dropped from the store afterwards, so the
rows after this one do not send it.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import redis
from sqlalchemy import update

from producer import db, send_bulk, send_sms
from producer.enqueue import publisher
from producer.models import Message
from producer.queues import SEND_QUEUES

N_CALLS = 500
N_BULK = 10_000
N_HTTP = 2_000
CLIENTS = 4


@dataclass
class ProducerRun:
    send_p50_ms: float
    send_p99_ms: float
    bulk_seconds: float
    http_per_second: float


@contextmanager
def paused(workers: int) -> Iterator[None]:
    """Workers stop taking sends; afterwards what was queued meanwhile is dropped."""
    control = publisher().control
    for queue in SEND_QUEUES.values():
        control.cancel_consumer(queue, reply=True, timeout=5, limit=workers)
    try:
        yield
    finally:
        client = redis.Redis.from_url(publisher().conf.broker_url)
        client.delete(*SEND_QUEUES.values())
        with db.session() as s:
            s.execute(
                update(Message)
                .where(Message.status == "queued")  # type: ignore[arg-type]
                .values(status="failed", error="dropped by the benchmark")
            )
            s.commit()
        for queue in SEND_QUEUES.values():
            control.add_consumer(queue, reply=True, timeout=5, limit=workers)


def _number(prefix: str, i: int) -> str:
    return f"{prefix}{100_000 + i}{1 + i % 7}"  # prefix + 7 digits; the sandbox delivers it


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def time_send_sms() -> tuple[float, float]:
    took = []
    for i in range(N_CALLS):
        started = time.perf_counter()
        send_sms(_number("24381", i), f"one thread {i}", provider="keccel")
        took.append(time.perf_counter() - started)
    return statistics.median(took) * 1000, _percentile(took, 0.99) * 1000


def time_send_bulk() -> float:
    best = float("inf")
    for run, prefix in enumerate(("38067", "38063", "38066")):
        numbers = [_number(prefix, i) for i in range(N_BULK)]
        started = time.perf_counter()
        send_bulk(numbers, f"bulk of ten thousand {run}", provider="smsclub")
        best = min(best, time.perf_counter() - started)
    return best


def time_http(base_url: str, api_key: str) -> float:
    """Requests/s of `POST /v1/messages` from CLIENTS threads, N_HTTP in all."""
    counter = iter(range(N_HTTP))
    lock = threading.Lock()
    errors: list[int] = []

    def client() -> None:
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                body = {"to": _number("24382", i), "text": f"http {i}", "provider": "keccel"}
                answer = http.post("/v1/messages", json=body)
                if answer.status_code != 201:
                    errors.append(answer.status_code)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. HTTP {errors[0]}")
    return N_HTTP / elapsed


def run(workers: int, base_url: str, api_key: str) -> ProducerRun:
    with paused(workers):
        p50, p99 = time_send_sms()
        bulk = time_send_bulk()
        http = time_http(base_url, api_key)
    return ProducerRun(p50, p99, bulk, http)


def rows(result: ProducerRun) -> list[tuple[str, str, str, str]]:
    return [
        (f"send_sms, one thread, p50 ({N_CALLS})", f"{result.send_p50_ms:8.2f} ms", "", "<= 2 ms"),
        (f"send_sms, one thread, p99 ({N_CALLS})", f"{result.send_p99_ms:8.2f} ms", "", "<= 10 ms"),
        (
            f"send_bulk of {N_BULK:,} numbers (best of 3)",
            f"{result.bulk_seconds:8.2f} s",
            "",
            "<= 2 s",
        ),
        (
            f"POST /v1/messages, {CLIENTS} clients ({N_HTTP})",
            f"{result.http_per_second:8.0f} req/s",
            "",
            "",
        ),
    ]
