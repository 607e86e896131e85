"""Thin Celery tasks: ids in, the work done by modules that know nothing of Celery."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Task

from producer.enqueue import publish_notify, publish_poll, publish_send
from producer.queues import (
    ALERT_TASK,
    BALANCE_TASK,
    MAX_COUNTDOWN,
    NOTIFY_TASK,
    POLL_TASK,
    RETENTION_TASK,
    ROLLUP_TASK,
    SEND_TASK,
    TICK_TASK,
    priority_of_queue,
)
from worker.celery_app import app

log = logging.getLogger("smsq.tasks")


def _requeuer(priority: str) -> Callable[..., None]:
    """`requeue(ids, countdown[, claim_token])` onto the send queue of `priority`."""

    def requeue(ids: list[str], countdown: float, claim_token: str | None = None) -> None:
        """Queue `ids` again; `claim_token` (not a secret: it names a claim) when the claim
        gave up not knowing whether it committed, so the next task can take its rows up."""
        delay = min(max(countdown, 0.0), MAX_COUNTDOWN)
        publish_send(ids, delay, claim_token, priority=priority)

    return requeue


@app.task(name=SEND_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def send(self: Task, ids: list[str], claim_token: str | None = None) -> dict[str, object]:
    """Send messages by id (one provider batch). Redelivery is harmless: rows are claimed.
    A later try goes back to the queue this task came from: it keeps its priority."""
    from worker.sending.send import send_messages

    queue = (self.request.delivery_info or {}).get("routing_key")
    outcome = send_messages(ids, _requeuer(priority_of_queue(queue)), claim_token=claim_token)
    return outcome.__dict__


@app.task(name=POLL_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def poll(provider: str, ids: list[str]) -> int:
    """Ask the gateway the delivery status of these messages."""
    from worker.tracking.polling import poll_messages

    return poll_messages(provider, ids)


@app.task(name=NOTIFY_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def notify_app(ids: list[int]) -> dict[str, int]:
    """POST status changes to the applications' callback URLs (notification ids)."""
    from worker.tracking.notify import deliver

    return deliver(ids)


# Maintenance that beat queues on a timer sends no task events (`send_events=False`,
# and beat publishes without `task-sent`: worker.beat), so Flower's task list shows
# the sends, polls and callbacks, not one `smsq.tick` every SMSQ_TICK_SECONDS.
@app.task(name=TICK_TASK, ignore_result=True, expires=30, send_events=False)
def tick() -> dict[str, int]:
    """Queue due scheduled sends, retries, swept rows and polls."""
    from worker.resilience.sweeps import tick as run_tick

    return run_tick(publish_send, publish_poll, publish_notify).__dict__


@app.task(name=BALANCE_TASK, ignore_result=True, expires=300, send_events=False)
def check_balances() -> dict[str, object]:
    """Fetch every configured provider's balance, store it, raise alerts on crossings."""
    from worker.balance.checks import check_all

    return check_all()


@app.task(name=ALERT_TASK, ignore_result=True, expires=300)
def deliver_alerts() -> dict[str, int]:
    """Retry balance alerts whose webhook or e-mail was down; re-queues itself (<= 60 s)."""
    from worker.balance.alerts import retry_task

    return retry_task()


@app.task(name=RETENTION_TASK, ignore_result=True, expires=60)
def retention() -> dict[str, object]:
    """Mask the numbers and remove the texts of final messages past SMSQ_RETENTION_DAYS."""
    from worker.store.retention import run

    return run().__dict__


@app.task(name=ROLLUP_TASK, ignore_result=True, expires=30, send_events=False)
def ui_rollup() -> dict[str, int]:
    """Add the events since the watermark to the dashboard's summary table."""
    from worker.ui.rollup import run

    return run().__dict__
