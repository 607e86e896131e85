"""Counters shared by every process through Redis, rendered by `web` as Prometheus text.

prometheus-client counters live in one process; smsq's sends happen in many
workers on many hosts, so the counts meet in one Redis hash that `/metrics`
(in `worker.web`) reads back with a custom collector. Increments are added up in
the process and flushed every `FLUSH_SECONDS` in one pipeline (one round trip for
all of them) by a daemon thread, and at exit: a send no longer pays two or three
Redis round trips for its counters. A process killed outright loses at most its
last `FLUSH_SECONDS` of counts; a flush that fails keeps them for the next one.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from worker import redis_client

log = logging.getLogger("smsq.metrics")
HASH = "smsq:metrics"
FLUSH_SECONDS = 0.5

_lock = threading.Lock()
_pending: dict[str, int] = {}
_flusher: tuple[int, threading.Thread] | None = None  # (pid, thread)
_wake = threading.Event()
_auto = True  # the flusher thread flushes (tests of one flush turn it off)


def _add(field: str, amount: int) -> None:
    global _flusher
    with _lock:
        _pending[field] = _pending.get(field, 0) + amount
        if _flusher is None or _flusher[0] != os.getpid():  # none yet, or a forked child
            thread = threading.Thread(target=_flush_forever, name="smsq-metrics", daemon=True)
            _flusher = (os.getpid(), thread)
            thread.start()


def flush() -> None:
    """Push this process's counts to Redis now (one pipeline); kept if Redis is away."""
    with _lock:
        batch = dict(_pending)
        _pending.clear()
    if not batch:
        return
    try:
        pipe = redis_client.shared().pipeline(transaction=False)
        for field, amount in batch.items():
            pipe.hincrby(HASH, field, amount)
        pipe.execute()
    except (redis.RedisError, RuntimeError, OSError):
        log.debug("metrics unavailable; kept for the next flush", exc_info=True)
        with _lock:
            for field, amount in batch.items():
                _pending[field] = _pending.get(field, 0) + amount


def _flush_forever() -> None:
    while True:
        _wake.wait(FLUSH_SECONDS)
        _wake.clear()
        if _auto:
            flush()


atexit.register(flush)


class _Bound:
    def __init__(self, counter: SharedCounter, values: tuple[str, ...]) -> None:
        self._field = counter.name + "|" + "|".join(values)

    def inc(self, amount: int = 1) -> None:
        _add(self._field, amount)


class SharedCounter:
    registry: dict[str, SharedCounter] = {}

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labels
        SharedCounter.registry[name] = self

    def labels(self, *values: str) -> _Bound:
        return _Bound(self, tuple(str(v) for v in values))


SEND_REQUESTS = SharedCounter(
    "smsq_send_requests", "Send requests answered by a gateway", ("provider",)
)
SEND_ERRORS = SharedCounter("smsq_send_errors", "Send requests that failed", ("provider", "kind"))
MESSAGES = SharedCounter("smsq_messages", "Messages reaching a status", ("provider", "status"))
# The same changes by traffic class (a label of its own counter, so the series of
# `smsq_messages` that dashboards already query keep their labels).
MESSAGES_BY_PRIORITY = SharedCounter(
    "smsq_priority_messages",
    "Messages reaching a status, by priority",
    ("provider", "priority", "status"),
)
RETRIES = SharedCounter("smsq_retries", "Send retries scheduled", ("provider", "reason"))
POLLS = SharedCounter("smsq_status_polls", "Status requests made", ("provider",))
CALLBACKS = SharedCounter(
    "smsq_dlr_callbacks", "Delivery callbacks received", ("provider", "result")
)
APP_CALLBACKS = SharedCounter(
    "smsq_app_callbacks", "Status callbacks POSTed to applications", ("provider", "result")
)


class SharedCollector(Collector):
    """Reads the Redis hash back into Prometheus counter families."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        flush()  # this process's own counts too
        try:
            raw = redis_client.shared().hgetall(HASH)
        except (redis.RedisError, RuntimeError, OSError):
            raw = {}
        families = {
            name: CounterMetricFamily(name, c.documentation, labels=list(c.labelnames))
            for name, c in SharedCounter.registry.items()
        }
        for field, value in raw.items():
            parts = field.decode().split("|")
            family = families.get(parts[0])
            counter = SharedCounter.registry.get(parts[0])
            if family is None or counter is None or len(parts) - 1 != len(counter.labelnames):
                continue
            family.add_metric(parts[1:], float(value))
        yield from families.values()
