"""Task names, queues and the broker URL, shared by the producer and the worker.

The producer publishes by task name, so it needs none of the worker's code.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from producer import sentinel
from producer.embedded_redis import ensure_embedded_redis
from producer.sentinel import SentinelGroup
from producer.settings import get_settings

log = logging.getLogger("smsq.queues")

SEND_TASK = "smsq.send"
POLL_TASK = "smsq.poll"
TICK_TASK = "smsq.tick"
BALANCE_TASK = "smsq.check_balances"
NOTIFY_TASK = "smsq.notify_app"
ALERT_TASK = "smsq.deliver_alerts"
RETENTION_TASK = "smsq.retention"
ROLLUP_TASK = "smsq.ui_rollup"  # the dashboard's summary table (worker.ui.rollup)

SEND_HIGH_QUEUE = "send_high"
SEND_QUEUE = "send"  # normal priority
SEND_BULK_QUEUE = "send_bulk"
SEND_QUEUES: dict[str, str] = {
    "high": SEND_HIGH_QUEUE,
    "normal": SEND_QUEUE,
    "bulk": SEND_BULK_QUEUE,
}
POLL_QUEUE = "poll"
MAINTENANCE_QUEUE = "maintenance"
CALLBACK_QUEUE = "callbacks"  # app callbacks: slow application hosts stay off send and poll
# A worker takes the first non-empty queue in this order (queue_order_strategy
# "priority", below), so a bulk backlog never sits in front of a one-time code in the
# broker; with prefetch 1 under acks_late nothing waits in a worker's prefetch either.
# At the gateway's rate limit the order is kept by the limiter itself
# (worker.resilience.ratelimit).
WORKER_QUEUES = ",".join(
    (
        MAINTENANCE_QUEUE,
        SEND_HIGH_QUEUE,
        CALLBACK_QUEUE,
        POLL_QUEUE,
        SEND_QUEUE,
        SEND_BULK_QUEUE,
    )
)

TASK_ROUTES: dict[str, dict[str, str]] = {
    SEND_TASK: {"queue": SEND_QUEUE},
    POLL_TASK: {"queue": POLL_QUEUE},
    NOTIFY_TASK: {"queue": CALLBACK_QUEUE},
    TICK_TASK: {"queue": MAINTENANCE_QUEUE},
    BALANCE_TASK: {"queue": MAINTENANCE_QUEUE},
    ALERT_TASK: {"queue": MAINTENANCE_QUEUE},
    RETENTION_TASK: {"queue": MAINTENANCE_QUEUE},
    ROLLUP_TASK: {"queue": MAINTENANCE_QUEUE},
}


def send_queue(priority: str | None) -> str:
    """The send queue of a priority (unknown or None: normal's)."""
    return SEND_QUEUES.get(priority or "normal", SEND_QUEUE)


def priority_of_queue(queue: str | None) -> str:
    """The priority whose sends a queue holds (normal for any other queue)."""
    return next((p for p, q in SEND_QUEUES.items() if q == queue), "normal")


VISIBILITY_TIMEOUT = 3600  # seconds; every countdown and time limit stays well below it
MAX_COUNTDOWN = 60.0  # longer waits live in the store and beat enqueues them when due


_embedded_expected = False
_warned = False


def expect_embedded_redis() -> None:
    """This process is one where a person expects the embedded Redis when no broker is
    set (the `smsq` command, the local stack, tests): no warning."""
    global _embedded_expected
    _embedded_expected = True


@lru_cache(maxsize=1)
def broker_url() -> str:
    """SMSQ_BROKER_URL, or the embedded Redis under SMSQ_DATA_DIR (started if none runs).

    A web app that imports the producer with no broker set gets the embedded one too,
    so nothing it sends is lost, but says so once at WARNING: in production every
    process must share one Redis, named by SMSQ_BROKER_URL."""
    global _warned
    settings = get_settings()
    if settings.broker_url:
        return settings.broker_url
    if not _embedded_expected and not _warned:
        _warned = True
        log.warning(
            "SMSQ_BROKER_URL is not set: using the embedded Redis under %s (started if "
            "none runs there); set SMSQ_BROKER_URL=redis://HOST:6379/0 so that every "
            "process of the deployment shares one broker",
            settings.data_dir,
        )
    return ensure_embedded_redis(settings.data_dir)


def sentinel_group() -> SentinelGroup | None:
    """The Sentinel group SMSQ_BROKER_URL names (its `sentinel://` form), else None."""
    url = broker_url()
    if not sentinel.is_sentinel(url):
        return None
    settings = get_settings()
    secret = settings.redis_sentinel_password
    return sentinel.parse(
        url, settings.redis_sentinel_master, secret.get_secret_value() if secret else None
    )


BROKER_SOCKET_TIMEOUT = 10
BROKER_CONNECT_TIMEOUT = 5


def celery_config() -> dict[str, Any]:
    """Celery settings shared by the producer's publisher and the worker."""
    url = broker_url()
    transport: dict[str, Any] = {
        "visibility_timeout": VISIBILITY_TIMEOUT,
        # BRPOP the worker's queues in the order given to -Q, every time (the
        # default rotates them for fairness, which lets bulk go before high).
        "queue_order_strategy": "priority",
        "socket_timeout": BROKER_SOCKET_TIMEOUT,
        "socket_connect_timeout": BROKER_CONNECT_TIMEOUT,
        "retry_on_timeout": True,
    }
    group = sentinel_group()
    if group is not None:  # kombu asks the sentinels for the current master
        transport["master_name"] = group.master
        transport["sentinel_kwargs"] = group.sentinel_kwargs(
            BROKER_SOCKET_TIMEOUT, BROKER_CONNECT_TIMEOUT
        )
    return {
        "broker_url": url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5,
        "broker_transport_options": transport,
        "task_routes": TASK_ROUTES,
        "task_default_queue": SEND_QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_time_limit": 300,
        "task_soft_time_limit": 240,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "enable_utc": True,
        "timezone": "UTC",
    }
