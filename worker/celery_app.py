"""The Celery app: `celery -A worker.celery_app worker|beat`.

Settings that matter (see producer.queues.celery_config): acks late and
reject on worker loss (a killed worker's task runs again; the row claim makes
that safe), prefetch 1, time limits well under the visibility timeout,
separate queues for send, poll and maintenance. Beat uses redbeat, whose
Redis lock makes several beat processes on several hosts safe.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_postrun,
    task_prerun,
    task_received,
    worker_init,
    worker_shutdown,
    worker_shutting_down,
)

from producer import kombu_clients
from producer.queues import (
    BALANCE_TASK,
    RETENTION_TASK,
    ROLLUP_TASK,
    TICK_TASK,
    broker_url,
    celery_config,
    sentinel_group,
)
from producer.settings import get_settings
from worker import redis_client
from worker.ops import kombu_fix
from worker.store.retention import RETENTION_EVERY_SECONDS


def redbeat_settings() -> tuple[str, dict[str, Any]]:
    """redbeat's URL and client options: the broker's Redis, or its Sentinel group
    (redbeat's `redis-sentinel` form, the URL then only naming the kind). Bounded
    calls: a Redis that stops answering costs beat seconds per call, never a hang
    (SIGTERM included: `worker.beat.SmsqScheduler.close`)."""
    timeouts = {
        "socket_timeout": redis_client.SOCKET_TIMEOUT,
        "socket_connect_timeout": redis_client.CONNECT_TIMEOUT,
    }
    group = sentinel_group()
    if group is None:
        return broker_url(), timeouts
    host, port = group.nodes[0]
    options: dict[str, Any] = {
        "sentinels": list(group.nodes),
        "service_name": group.master,
        "db": group.db,
        "password": group.password,
        "socket_timeout": redis_client.SOCKET_TIMEOUT,
        "sentinel_kwargs": group.sentinel_kwargs(
            redis_client.SOCKET_TIMEOUT, redis_client.CONNECT_TIMEOUT
        ),
    }
    if group.username:
        options["username"] = group.username
    return f"redis-sentinel://{host}:{port}/{group.db}", options


_redbeat_url, _redbeat_options = redbeat_settings()

kombu_fix.install()  # a Redis lost mid-task must not end the worker (see the module)
kombu_clients.install()  # one redis-py client per channel, not one per command

app = Celery("smsq", include=["worker.tasks"])
app.conf.update(celery_config())

_settings = get_settings()
app.conf.update(
    beat_scheduler="worker.beat.SmsqScheduler",
    redbeat_redis_url=_redbeat_url,
    redbeat_redis_options=_redbeat_options,
    redbeat_key_prefix="smsq:redbeat:",
    beat_max_loop_interval=5,
    redbeat_lock_timeout=30,  # > beat_max_loop_interval: a dead beat's lock frees in 30 s
    beat_schedule={
        "smsq-tick": {"task": TICK_TASK, "schedule": timedelta(seconds=_settings.tick_seconds)},
        "smsq-ui-rollup": {
            "task": ROLLUP_TASK,
            "schedule": timedelta(seconds=_settings.ui_rollup_seconds),
        },
        "smsq-balance": {
            "task": BALANCE_TASK,
            "schedule": timedelta(seconds=_settings.balance_check_seconds),
        },
        # Its own task, not part of the tick: short batches, a budget per run
        # (worker.store.retention); nothing to do with SMSQ_RETENTION_DAYS=0.
        "smsq-retention": {
            "task": RETENTION_TASK,
            "schedule": timedelta(seconds=RETENTION_EVERY_SECONDS),
        },
    },
)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_logs(logger, *args, **kwargs):  # type: ignore[no-untyped-def]
    from worker.ops.logs import install

    install(logger)


@worker_init.connect
def _startup_warnings(*args, **kwargs):  # type: ignore[no-untyped-def]
    from worker.ops.startup_checks import warn_once

    warn_once()


@worker_shutting_down.connect
def _stop_rate_waits(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Sends waiting for a rate-limit slot hand their rows back now: warm shutdown
    then waits only for requests actually in flight."""
    from worker.resilience import ratelimit

    ratelimit.stop_waiting()


@worker_shutdown.connect
def _stop_heartbeat(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Warm shutdown has finished the tasks: nothing of ours stays claimed."""
    from worker.ops import metrics
    from worker.resilience import liveness, takeover

    takeover.forget_own()
    liveness.stop_heartbeat()
    metrics.flush()


@task_received.connect
def _record_reservation(request=None, **kwargs):  # type: ignore[no-untyped-def]
    """A task this worker holds unacked: restored by beat if this process dies first."""
    from worker.resilience import takeover

    message = getattr(request, "message", None)
    takeover.received(
        getattr(request, "id", ""),
        getattr(message, "delivery_tag", None),
        getattr(request, "kwargs", None),
    )


@task_prerun.connect
def _task_started(task_id=None, kwargs=None, **_):  # type: ignore[no-untyped-def]
    from worker.ops import shutdown
    from worker.resilience import takeover

    shutdown.task_started()
    takeover.started(task_id or "", kwargs)


@task_postrun.connect
def _task_done(task_id=None, **kwargs):  # type: ignore[no-untyped-def]
    from worker.ops import shutdown
    from worker.resilience import takeover

    shutdown.task_ended()
    takeover.done(task_id or "")


@worker_shutting_down.connect
def _bounded_stop(*args, **kwargs):  # type: ignore[no-untyped-def]
    """SIGTERM (or SIGINT, SIGQUIT): the process exits within seconds, even if the
    broker's goodbyes cannot reach Redis (`worker.ops.shutdown`)."""
    from worker.ops import shutdown

    shutdown.arm("worker")
