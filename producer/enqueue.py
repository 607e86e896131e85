"""The one way a task is queued: by name, without importing the worker.

The producer, the worker's send path (a retry, a hand-back), beat's tick and the
alert retries all publish through here, with one retry policy."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from celery import Celery

from producer import kombu_clients
from producer.queues import (
    ALERT_TASK,
    NOTIFY_TASK,
    POLL_TASK,
    SEND_TASK,
    celery_config,
    send_queue,
)

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
            kombu_clients.install()
            app = Celery("smsq-producer")
            app.conf.update(celery_config())
            _app = app
        return _app


def reset_publisher() -> None:
    global _app
    with _lock:
        _app = None


def publish(
    task: str,
    args: Sequence[object] = (),
    kwargs: dict[str, object] | None = None,
    countdown: float | None = None,
    queue: str | None = None,
) -> None:
    """Queue `task` by name (on `queue`, else its route); the broker's errors, after a
    short retry, are raised."""
    publisher().send_task(
        task,
        args=list(args),
        kwargs=kwargs or {},
        countdown=countdown,
        queue=queue,
        retry=True,
        retry_policy=PUBLISH_RETRY_POLICY,
    )


def publish_send(
    ids: Sequence[str],
    countdown: float | None = None,
    claim_token: str | None = None,
    *,
    priority: str = "normal",
) -> None:
    """Queue one send task for `ids` (messages of one provider and one priority, one
    batch) on its priority's queue. `claim_token`: an earlier claim of theirs whose
    commit may have landed unheard."""
    kwargs = {"claim_token": claim_token} if claim_token else None
    publish(SEND_TASK, [list(ids)], kwargs, countdown, queue=send_queue(priority))


def publish_poll(provider: str, ids: Sequence[str]) -> None:
    """Queue one status poll of `ids` at `provider`."""
    publish(POLL_TASK, [provider, list(ids)])


def publish_notify(ids: Sequence[int]) -> None:
    """Queue the POST of application status callbacks (notification row ids)."""
    publish(NOTIFY_TASK, [list(ids)])


def publish_alert_retry(countdown: float) -> None:
    """Queue the next try of balance alerts whose channel was down."""
    publish(ALERT_TASK, countdown=countdown)
