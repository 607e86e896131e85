"""What one message costs the shared parts: Redis commands, store round trips, CPU.

Counted around a timed run (bench/history.py), divided by the messages it sent:
- Redis: `INFO commandstats` of the bench's Redis (every client: the producer's
  enqueue, the workers, beat, Celery's events and heartbeats), and its CPU
  (`INFO cpu`);
- the store: statements, commits and connection checkouts (each pings the
  server: `pool_pre_ping`) of the worker processes (bench/app.py counts them,
  read with the `smsq_bench_counts` remote-control command), plus the producer's
  (this process, counted while it enqueues);
- CPU: the worker processes' user + system time (psutil), and the PostgreSQL
  server's processes when the store is PostgreSQL.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import psutil
import redis
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

from producer.enqueue import publisher
from worker.ops.stack import Stack

ROUND_TRIPS = ("statements", "commits", "checkouts")


class ProducerCounter:
    """Store round trips of this process (the producer's `send_sms`/`send_bulk`)
    while `on` is set: the bench's own reads (`sent_count`) are left out."""

    def __init__(self) -> None:
        self.on = False
        self.counts = dict.fromkeys(ROUND_TRIPS, 0)
        self._lock = threading.Lock()
        event.listen(Engine, "before_cursor_execute", self._make("statements"))
        event.listen(Engine, "commit", self._make("commits"))
        event.listen(Pool, "checkout", self._make("checkouts"))

    def _make(self, key: str) -> Any:
        def count(*_args: Any) -> None:
            if self.on and threading.current_thread() is threading.main_thread():
                with self._lock:
                    self.counts[key] += 1

        return count

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


@dataclass
class Snapshot:
    redis_calls: dict[str, int]
    redis_cpu: float
    worker: dict[str, int]
    worker_cpu: float
    producer: dict[str, int]
    producer_cpu: float
    store_cpu: float | None


@dataclass
class Costs:
    """Per message, between two snapshots."""

    messages: int
    redis_commands: float
    redis_top: list[tuple[str, float]] = field(default_factory=list)
    redis_cpu_ms: float = 0.0
    worker_trips: dict[str, float] = field(default_factory=dict)
    producer_trips: dict[str, float] = field(default_factory=dict)
    worker_cpu_ms: float = 0.0
    producer_cpu_ms: float = 0.0
    store_cpu_ms: float | None = None

    def cells(self) -> list[tuple[str, str]]:
        """(measure, value) rows for the table."""
        w, p = self.worker_trips, self.producer_trips
        rows = [
            ("Redis commands / msg", f"{self.redis_commands:.1f}"),
            ("Redis CPU ms / msg", f"{self.redis_cpu_ms:.3f}"),
            (
                "store statements / msg (worker + producer)",
                f"{w['statements']:.2f} + {p['statements']:.2f}",
            ),
            ("store commits / msg (worker + producer)", f"{w['commits']:.2f} + {p['commits']:.2f}"),
            (
                "store checkouts (pings) / msg (worker + producer)",
                f"{w['checkouts']:.2f} + {p['checkouts']:.2f}",
            ),
            ("worker CPU ms / msg (all worker processes)", f"{self.worker_cpu_ms:.2f}"),
            ("producer CPU ms / msg (send_sms / send_bulk)", f"{self.producer_cpu_ms:.2f}"),
        ]
        if self.store_cpu_ms is not None:
            rows.append(("PostgreSQL CPU ms / msg (server processes)", f"{self.store_cpu_ms:.2f}"))
        return rows


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def postgres_pids(postmaster: int) -> list[int]:
    try:
        root = psutil.Process(postmaster)
        return [postmaster] + [c.pid for c in root.children(recursive=True)]
    except psutil.Error:
        return []


def worker_counts() -> dict[str, int]:
    """Sum over the worker processes of bench/app.py's counters."""
    replies = publisher().control.broadcast("smsq_bench_counts", reply=True, timeout=2)
    total = dict.fromkeys(ROUND_TRIPS, 0)
    for reply in replies or []:
        for counts in reply.values():
            for key in ROUND_TRIPS:
                total[key] += int(counts.get(key, 0))
    return total


def snapshot(
    stack: Stack,
    r: redis.Redis,
    producer: ProducerCounter,
    producer_cpu: float,
    pg: int | None,
    closing: bool = False,
) -> Snapshot:
    """Opening: the workers' counts first, then Redis's; closing: Redis's first. So
    the remote-control calls' own Redis commands fall outside the interval."""
    worker = {} if closing else worker_counts()
    stats = r.info("commandstats")
    cpu = r.info("cpu")
    if closing:
        worker = worker_counts()
    pids = [pid for name in stack.worker_names for pid in stack.pids(name)]
    return Snapshot(
        redis_calls={k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()},
        redis_cpu=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        worker=worker,
        worker_cpu=_cpu(pids),
        producer=producer.snapshot(),
        producer_cpu=producer_cpu,
        store_cpu=_cpu(postgres_pids(pg)) if pg else None,
    )


def per_message(before: Snapshot, after: Snapshot, messages: int) -> Costs:
    calls = {
        k: (after.redis_calls.get(k, 0) - before.redis_calls.get(k, 0)) / messages
        for k in after.redis_calls
    }
    calls.pop("info", None)  # the snapshots' own
    ms = 1000.0 / messages
    return Costs(
        messages=messages,
        redis_commands=sum(calls.values()),
        redis_top=sorted(((k, v) for k, v in calls.items() if v > 0), key=lambda kv: -kv[1]),
        redis_cpu_ms=(after.redis_cpu - before.redis_cpu) * ms,
        worker_trips={k: (after.worker[k] - before.worker[k]) / messages for k in ROUND_TRIPS},
        producer_trips={
            k: (after.producer[k] - before.producer[k]) / messages for k in ROUND_TRIPS
        },
        worker_cpu_ms=(after.worker_cpu - before.worker_cpu) * ms,
        producer_cpu_ms=(after.producer_cpu - before.producer_cpu) * ms,
        store_cpu_ms=(
            (after.store_cpu - before.store_cpu) * ms
            if after.store_cpu is not None and before.store_cpu is not None
            else None
        ),
    )
