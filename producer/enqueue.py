"""Publish send tasks by name, without importing the worker."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from celery import Celery

from producer.queues import NOTIFY_TASK, SEND_TASK, celery_config

log = logging.getLogger("smsq.producer")
_app: Celery | None = None
_lock = threading.Lock()

# Fail fast when the broker is down: the row stays queued for the beat sweep.
PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}


def publisher() -> Celery:
    global _app
    with _lock:
        if _app is None:
            app = Celery("smsq-producer")
            app.conf.update(celery_config())
            _app = app
        return _app


def reset_publisher() -> None:
    global _app
    with _lock:
        _app = None


def publish_send(ids: Sequence[str], countdown: float | None = None) -> None:
    """Queue one send task for `ids` (messages of one provider, one batch)."""
    publisher().send_task(
        SEND_TASK,
        args=[list(ids)],
        countdown=countdown,
        retry=True,
        retry_policy=PUBLISH_RETRY_POLICY,
    )


def publish_notify(ids: Sequence[int]) -> None:
    """Queue the POST of application status callbacks (notification row ids)."""
    publisher().send_task(
        NOTIFY_TASK, args=[list(ids)], retry=True, retry_policy=PUBLISH_RETRY_POLICY
    )
