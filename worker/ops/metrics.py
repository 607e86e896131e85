"""Counters shared by every process through Redis, rendered by `web` as Prometheus text.

prometheus-client counters live in one process; smsq's sends happen in many
workers on many hosts, so each increment is a Redis HINCRBY and `/metrics`
(in `worker.web`) reads the hash back with a custom collector.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from worker import redis_client

log = logging.getLogger("smsq.metrics")
HASH = "smsq:metrics"


class _Bound:
    def __init__(self, counter: SharedCounter, values: tuple[str, ...]) -> None:
        self._field = counter.name + "|" + "|".join(values)

    def inc(self, amount: int = 1) -> None:
        try:
            redis_client.shared().hincrby(HASH, self._field, amount)
        except (redis.RedisError, RuntimeError, OSError):
            log.debug("metrics unavailable", exc_info=True)


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
