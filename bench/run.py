"""`make bench`: smsq against bare Celery on the embedded stack, one run, one table.

The stack: embedded Redis, SQLite (WAL), two worker processes (threads pool,
`-c 4` each), beat, the gateway simulators over loopback. Measured:

- no-op: `smsq.noop` (bench/app.py) on the same queue, acks, prefetch;
- single sends: Keccel `send_sms`, one request per message;
- bulk: SMSClub `send_bulk`, 100 numbers per request, in recipients/s;
- the producer: `send_sms` from one thread, `send_bulk` of 10,000, `POST /v1/messages`
  at 4 clients (bench/producer_path.py);
- latency at idle: `send_sms` returning -> the simulator receiving the request;
- the rate limit: SMSClub at 9/s through two 1-thread worker processes;
- priorities: 50 high codes during a campaign saturating 9/s (bench/priority.py);
- peak RSS (VmHWM) of each worker process and its children.
Throughputs are timed from the moment the workers start consuming a queue
already filled (consumers cancelled while it fills) until the last task is done.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from sqlmodel import select

from bench import NOOP_COUNTER, NOOP_TASK, priority, producer_path
from producer import db, send_bulk, send_sms
from producer.enqueue import publisher
from producer.models import Message
from producer.queues import SEND_BULK_QUEUE, SEND_QUEUE, broker_url
from worker.gateways.sandbox.base import ProviderSim, max_in_window
from worker.ops.stack import Stack

RATE = 9
SENT_OR_LATER = ("sent", "delivered", "undelivered", "expired")
API_KEY = "bench-key-0123456789"
BENCH_ENV = {
    "SMSQ_POLL_SCHEDULE": "3600",  # no polls during the run: sends only
    "SMSQ_API_KEYS": f"bench:{API_KEY}",
    "SMSQ_API_KEY_LIMIT": "1000000/minute",  # the HTTP row measures the API, not its quota
    "SMSQ_TICK_SECONDS": "2",
    "SMSQ_SWEEP_AFTER_SECONDS": "300",
}
N_NOOP = 3000
N_SINGLE = 2000
N_BULK_REQUESTS = 200  # 20,000 recipients: start-up does not dominate
N_LATENCY = 60
N_RATE = 180


def wait_until(done: Callable[[], bool], timeout: float = 300.0, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(every)


def sent_count(ids: list[str]) -> int:
    n = 0
    with db.session() as s:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            n += len(
                s.exec(
                    select(Message.id).where(
                        Message.id.in_(chunk),  # type: ignore[union-attr]
                        Message.status.in_(SENT_OR_LATER),  # type: ignore[attr-defined]
                    )
                ).all()
            )
    return n


class Paused:
    """Workers stop consuming `queue` while it fills; timing starts on resume. Each
    control call returns once every worker has answered (`limit`), not after its
    whole timeout, which would be timed too."""

    def __init__(self, queue: str = SEND_QUEUE, workers: int = 2) -> None:
        self.queue, self.workers = queue, workers

    def __enter__(self) -> Paused:
        publisher().control.cancel_consumer(self.queue, reply=True, timeout=5, limit=self.workers)
        return self

    def __exit__(self, *exc: object) -> None:
        self.started = time.monotonic()
        publisher().control.add_consumer(self.queue, reply=True, timeout=5, limit=self.workers)


def bench_noop(r: redis.Redis) -> float:
    r.delete(NOOP_COUNTER)
    app = publisher()
    with Paused() as paused, app.producer_or_acquire() as producer:
        for _ in range(N_NOOP):
            app.send_task(NOOP_TASK, producer=producer)
    wait_until(lambda: int(r.get(NOOP_COUNTER) or 0) >= N_NOOP)
    return N_NOOP / (time.monotonic() - paused.started)


def bench_single() -> float:
    with Paused() as paused:
        ids = [
            send_sms(f"2438{i:07d}{1 + i % 7}", f"single {i}", provider="keccel")
            for i in range(N_SINGLE)
        ]
    wait_until(lambda: sent_count(ids) >= N_SINGLE, every=0.1)
    return N_SINGLE / (time.monotonic() - paused.started)


def bench_bulk() -> float:
    ids: list[str] = []
    with Paused(SEND_BULK_QUEUE) as paused:  # send_bulk's priority, bulk, has its own queue
        for r in range(N_BULK_REQUESTS):
            numbers = [f"38067{r:03d}{i:03d}{1 + i % 7}" for i in range(100)]
            ids += send_bulk(numbers, f"bulk {r} {uuid.uuid4().hex[:6]}", provider="smsclub")
    wait_until(lambda: sent_count(ids) >= len(ids), every=0.1)
    return len(ids) / (time.monotonic() - paused.started)


def bench_latency(sim: ProviderSim) -> list[float]:
    latencies = []
    for i in range(N_LATENCY):
        time.sleep(0.25)
        before = len(sim.requests)
        send_sms(f"24385{i:06d}{1 + i % 7}", f"latency {i}", provider="keccel")
        returned = time.time()
        wait_until(lambda n=before: len(sim.requests) > n, timeout=10, every=0.001)
        latencies.append(sim.requests[before].at - returned)
    return sorted(latencies)


def bench_rate(stack: Stack, sim: ProviderSim) -> tuple[int, float, float]:
    """Two worker processes of one thread each share SMSClub's 9/s."""
    stack.env["SMSQ_SMSCLUB_RATE_LIMIT"] = str(RATE)
    for name in stack.worker_names:
        stack.kill(name, 15)
        command = stack.commands[name]
        command[command.index("-c") + 1] = "1"
        stack.restart(name)
    wait_until(lambda: len(publisher().control.ping(timeout=0.5)) >= stack.workers, 60, 0.2)
    started = time.time()
    ids = [
        send_sms(f"38099{i:06d}{1 + i % 7}", f"rate {i} {uuid.uuid4().hex[:6]}", "smsclub")
        for i in range(N_RATE)
    ]
    wait_until(lambda: sent_count(ids) >= N_RATE, every=0.2)
    times = sorted(r.at for r in list(sim.requests) if r.at >= started)
    whole = int(times[-1] - times[0])  # whole seconds of backlog from the first request
    per_second = sum(1 for t in times if t < times[0] + whole) / whole
    return max_in_window(times), per_second, len(times)


def bench_priorities(stack: Stack, sims: dict[str, ProviderSim]) -> list[priority.PriorityRun]:
    """Codes during a saturating campaign, SMSClub then Keccel at 9/s (bench/priority.py),
    through the two worker processes back at -c 4."""
    stack.env["SMSQ_KECCEL_RATE_LIMIT"] = str(priority.RATE)
    stack.env["SMSQ_SMSCLUB_RATE_LIMIT"] = str(priority.RATE)
    for name in stack.worker_names:
        stack.kill(name, 15)
        command = stack.commands[name]
        command[command.index("-c") + 1] = "4"
        stack.restart(name)
    wait_until(lambda: len(publisher().control.ping(timeout=0.5)) >= stack.workers, 60, 0.2)
    return [
        priority.run("smsclub", sims["smsclub"], 20_000, "38099", "38067", wait_until),
        priority.run("keccel", sims["keccel"], 2_000, "24385", "24381", wait_until),
    ]


def main() -> int:
    for key in list(os.environ):
        if key.startswith("SMSQ_"):
            del os.environ[key]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="smsq-bench-") as tmp:
        stack = Stack(
            data_dir=Path(tmp),
            delivery_seconds=1.0,
            workers=2,
            worker_concurrency=4,
            web=True,
            app="bench.app",
            extra_env=BENCH_ENV,
        )
        os.environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
        try:
            try:
                stack.start()
            except RuntimeError:
                print(stack.log_tails())
                raise
            assert stack.sandbox is not None
            sims = stack.sandbox.sandbox.sims
            r = redis.Redis.from_url(broker_url())
            print("warming up ...", flush=True)
            warm = [send_sms("243851234561", "warm", provider="keccel")]
            wait_until(lambda: sent_count(warm) == 1, 30, 0.1)
            noop = bench_noop(r)
            single = bench_single()
            bulk = bench_bulk()
            producer = producer_path.run(stack.workers, stack.web_url, API_KEY)
            latency = bench_latency(sims["keccel"])
            rss = {name: stack.peak_rss_mb(name) for name in stack.worker_names}
            worst, per_second, requests = bench_rate(stack, sims["smsclub"])
            rss_rate = {name: stack.peak_rss_mb(name) for name in stack.worker_names}
            by_priority = bench_priorities(stack, sims)
        finally:
            stack.stop()
    p50 = statistics.median(latency) * 1000
    p99 = latency[min(len(latency) - 1, int(len(latency) * 0.99))] * 1000
    rows = [
        ("bare Celery no-op (same queue, acks, prefetch)", f"{noop:8.0f} tasks/s", "", ""),
        (
            f"single sends, Keccel ({N_SINGLE})",
            f"{single:8.0f} msg/s",
            f"{single / noop:5.2f} x no-op",
            ">= 0.5 x",
        ),
        (
            f"bulk, SMSClub 100/request ({N_BULK_REQUESTS * 100})",
            f"{bulk:8.0f} recipients/s",
            f"{bulk / noop:5.2f} x no-op",
            ">= 5 x",
        ),
        *producer_path.rows(producer),
        (f"send_sms -> gateway at idle, p50 ({N_LATENCY})", f"{p50:8.1f} ms", "", "<= 20 ms"),
        (f"send_sms -> gateway at idle, p99 ({N_LATENCY})", f"{p99:8.1f} ms", "", ""),
        (
            f"rate limit {RATE}/s, 2 workers x 1 thread ({requests})",
            f"max {worst} in any 1 s",
            f"{per_second / RATE:5.1%} of R",
            f"<= {RATE}; >= 95%",
        ),
        (
            "peak RSS per worker process (-c 4)",
            " / ".join(f"{v:.0f}" for v in rss.values()) + " MB",
            "",
            "<= 150 MB",
        ),
        (
            "peak RSS per worker process (after -c 1 run)",
            " / ".join(f"{v:.0f}" for v in rss_rate.values()) + " MB",
            "",
            "",
        ),
    ]
    for result in by_priority:
        rows.extend(priority.rows(result))
    print(f"\nsmsq benchmark: {os.cpu_count()} CPUs, load average {load:.2f} at start")
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'result':>24}  {'ratio':>14}  target")
    print("-" * (width + 50))
    for name, value, ratio, target in rows:
        print(f"{name:<{width}}  {value:>24}  {ratio:>14}  {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
