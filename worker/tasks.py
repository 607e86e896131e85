"""Thin Celery tasks: ids in, the work done by modules that know nothing of Celery."""

from __future__ import annotations

import logging

from producer.enqueue import publish_notify, publish_poll, publish_send
from producer.queues import (
    ALERT_TASK,
    BALANCE_TASK,
    MAX_COUNTDOWN,
    NOTIFY_TASK,
    POLL_TASK,
    RETENTION_TASK,
    SEND_TASK,
    TICK_TASK,
)
from worker.celery_app import app

log = logging.getLogger("smsq.tasks")


def _requeue(ids: list[str], countdown: float, claim_token: str | None = None) -> None:
    """Queue `ids` again; `claim_token` (not a secret: it names a claim) when the claim
    gave up not knowing whether it committed, so the next task can take its rows up."""
    publish_send(ids, min(max(countdown, 0.0), MAX_COUNTDOWN), claim_token)


@app.task(name=SEND_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def send(ids: list[str], claim_token: str | None = None) -> dict[str, object]:
    """Send messages by id (one provider batch). Redelivery is harmless: rows are claimed."""
    from worker.sending.send import send_messages

    outcome = send_messages(ids, _requeue, claim_token=claim_token)
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


@app.task(name=TICK_TASK, ignore_result=True, expires=30)
def tick() -> dict[str, int]:
    """Queue due scheduled sends, retries, swept rows and polls."""
    from worker.resilience.sweeps import tick as run_tick

    return run_tick(publish_send, publish_poll, publish_notify).__dict__


@app.task(name=BALANCE_TASK, ignore_result=True, expires=300)
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
