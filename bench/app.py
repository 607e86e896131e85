"""The worker's Celery app plus `smsq.noop`, the benchmark's yardstick.

`smsq.noop` runs on the same queue (`send`, the default), with the same acks,
prefetch and time limits as `smsq.send`; it only counts itself in Redis so the
benchmark knows when the queue is done.
"""

from __future__ import annotations

import redis

from bench import NOOP_COUNTER, NOOP_TASK
from producer.queues import broker_url
from worker.celery_app import app

_redis: redis.Redis | None = None


@app.task(name=NOOP_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def noop() -> None:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(broker_url())
    _redis.incr(NOOP_COUNTER)


__all__ = ["app", "noop"]
