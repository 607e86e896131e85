"""The worker's Celery app plus `smsq.noop`, the benchmark's yardstick.

`smsq.noop` runs on the same queue (`send`, the default), with the same acks,
prefetch and time limits as `smsq.send`; it only counts itself in Redis so the
benchmark knows when the queue is done.

It also counts the store statements and commits of the worker process (a
SQLAlchemy `before_cursor_execute` / `commit` listener; an `executemany` is one
statement, one round trip), read by the benchmark with the remote-control command
`smsq_bench_counts` (bench/costs.py).
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from celery.worker.control import inspect_command
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

from bench import NOOP_COUNTER, NOOP_TASK
from producer.queues import broker_url
from worker.celery_app import app

_redis: redis.Redis | None = None
# checkouts: each is a round trip too (the engines ping the connection: pool_pre_ping)
_counts = {"statements": 0, "commits": 0, "checkouts": 0}
_lock = threading.Lock()


@app.task(name=NOOP_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def noop() -> None:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(broker_url())
    _redis.incr(NOOP_COUNTER)


@event.listens_for(Engine, "before_cursor_execute")
def _statement(*_args: Any) -> None:
    with _lock:
        _counts["statements"] += 1


@event.listens_for(Engine, "commit")
def _commit(*_args: Any) -> None:
    with _lock:
        _counts["commits"] += 1


@event.listens_for(Pool, "checkout")
def _checkout(*_args: Any) -> None:
    with _lock:
        _counts["checkouts"] += 1


@inspect_command()
def smsq_bench_counts(state: Any) -> dict[str, int]:
    """This worker process's store statements, commits and checkouts so far."""
    with _lock:
        return dict(_counts)


__all__ = ["app", "noop", "smsq_bench_counts"]
