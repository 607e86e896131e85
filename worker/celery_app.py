"""The Celery app: `celery -A worker.celery_app worker|beat`.

Settings that matter (see producer.queues.celery_config): acks late and
reject on worker loss (a killed worker's task runs again; the row claim makes
that safe), prefetch 1, time limits well under the visibility timeout,
separate queues for send, poll and maintenance. Beat uses redbeat, whose
Redis lock makes several beat processes on several hosts safe.
"""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_init,
    worker_shutdown,
    worker_shutting_down,
)

from producer.queues import (
    BALANCE_TASK,
    RETENTION_TASK,
    ROLLUP_TASK,
    TICK_TASK,
    broker_url,
    celery_config,
)
from producer.settings import get_settings
from worker.store.retention import RETENTION_EVERY_SECONDS

app = Celery("smsq", include=["worker.tasks"])
app.conf.update(celery_config())

_settings = get_settings()
app.conf.update(
    beat_scheduler="worker.beat.SmsqScheduler",
    redbeat_redis_url=broker_url(),
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
    from worker.resilience import liveness

    liveness.stop_heartbeat()
    metrics.flush()
