"""A dead worker's reserved tasks go back to the queue at its heartbeat lapse, not in an hour.

With `task_acks_late`, a worker holds the tasks it has prefetched (and those
waiting for a countdown) unacknowledged: Celery's Redis transport keeps each
in the broker's `unacked` hash and puts it back on its queue only after the
visibility timeout (an hour). If the worker dies (SIGKILL, OOM, a lost host),
its rows stay `queued` until the sweep (SMSQ_SWEEP_AFTER_SECONDS) queues them
again; a one-time code is minutes late.

So each worker process records the delivery tag of every task it receives in
`smsq:reserved:<claim id>` (a hash: task id -> tag and time), and removes it
when the task is over. Beat's tick asks which recorded processes have stopped
beating (`liveness.dead`) and restores their recorded tasks by tag, with
kombu's own `restore_by_tag`: the message goes back to the head of its queue
and leaves `unacked` in one transaction, so it is not restored a second time
an hour later. The surviving workers take it next.

A task that had started is restored too: a send claims its rows with a
conditional UPDATE of `queued` rows, so running it again sends only what the
dead worker had not claimed yet (under SQLite's one writer a claim can wait
a while for the lock), and the rows it had claimed are settled by `reconcile`.
The one exception is a send carrying a claim token (queued again by a claim
that gave up during a store outage): it takes up the rows `sending` under
that token, and a second run could resend rows whose request the dead worker
made. It is not recorded (nor restored); it comes back with the sweep. A live
worker's records are never touched, however long its backlog: the queue does
not re-queue itself. A warm shutdown drops the process's record, since kombu
restores its unacked messages itself when the channel closes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import redis

from producer.queues import VISIBILITY_TIMEOUT
from worker import redis_client
from worker.resilience import liveness

log = logging.getLogger("smsq.takeover")

KEY = "smsq:reserved:{}"
OWNERS = "smsq:reserved:owners"  # claim ids with a record (so beat need not SCAN)
# A reservation older than this may already have been restored by kombu itself (at
# the visibility timeout) and delivered to another worker under the same tag: left alone.
TRUSTED_FOR = VISIBILITY_TIMEOUT - 600
_REDIS_ERRORS = (redis.RedisError, OSError, RuntimeError)

Restore = Callable[[list[str]], int]


def received(
    task_id: str, delivery_tag: str | None, kwargs: dict[str, object] | None = None
) -> None:
    """This process holds task `task_id` (not started yet). Never raises: without a
    record, the task comes back with the sweep, as before. A send under a claim token
    is not recorded (see above): its record could outlive its start when Redis is
    unreachable at that moment."""
    if not task_id or not delivery_tag or (kwargs or {}).get("claim_token"):
        return
    try:
        owner = liveness.ensure_heartbeat()  # seen alive before any record names it
        key = KEY.format(owner)
        pipe = redis_client.shared().pipeline(transaction=False)
        pipe.hset(key, task_id, f"{delivery_tag} {time.time():.0f}")
        pipe.expire(key, VISIBILITY_TIMEOUT)
        pipe.sadd(OWNERS, owner)
        pipe.execute()
    except _REDIS_ERRORS:
        log.debug("reservation of %s not recorded", task_id, exc_info=True)


def started(task_id: str, kwargs: dict[str, object] | None) -> None:
    """Task `task_id` starts: a send under a claim token must not run twice (see above)."""
    if (kwargs or {}).get("claim_token"):
        done(task_id)


def done(task_id: str) -> None:
    """Task `task_id` is over (its ack follows): nothing to restore."""
    if not task_id:
        return
    try:
        redis_client.shared().hdel(KEY.format(liveness.process_id()), task_id)
    except _REDIS_ERRORS:
        log.debug("reservation of %s not cleared", task_id, exc_info=True)


def forget_own() -> None:
    """Warm shutdown: kombu hands back this process's unacked messages itself."""
    owner = liveness.process_id()
    try:
        pipe = redis_client.shared().pipeline(transaction=False)
        pipe.delete(KEY.format(owner))
        pipe.srem(OWNERS, owner)
        pipe.execute()
    except _REDIS_ERRORS:
        log.debug("reservations not dropped", exc_info=True)


def parse(value: bytes | str) -> tuple[str, float]:
    """A record's (delivery tag, time received)."""
    text = value.decode() if isinstance(value, bytes) else value
    tag, _, at = text.partition(" ")
    try:
        return tag, float(at)
    except ValueError:
        return tag, 0.0


def restorable(records: dict[str, tuple[str, float]], now: float) -> dict[str, str]:
    """task id -> tag of the records young enough to restore (see TRUSTED_FOR)."""
    return {task: tag for task, (tag, at) in records.items() if now - at < TRUSTED_FOR}


def restore_dead(restore: Restore | None = None) -> int:
    """Put back on their queues the reserved tasks of every process that stopped
    beating; how many. Each record is taken with HDEL first, so two ticks never
    restore one task twice. Quiet when Redis cannot tell (`liveness.dead`)."""
    try:
        client = redis_client.shared()
        owners = {o.decode() if isinstance(o, bytes) else o for o in client.smembers(OWNERS)}
        gone = liveness.dead(owners)
        restored = 0
        for owner in sorted(gone):
            restored += _take_over(client, owner, restore or restore_by_tags)
        return restored
    except Exception:  # Redis or the broker unreachable: the next tick tries again
        log.warning("dead workers' reserved tasks not restored this tick", exc_info=True)
        return 0


def _take_over(client: redis.Redis, owner: str, restore: Restore) -> int:
    key = KEY.format(owner)
    records = {
        (k.decode() if isinstance(k, bytes) else k): parse(v)
        for k, v in client.hgetall(key).items()
    }
    taken = {
        task: tag
        for task, tag in restorable(records, time.time()).items()
        if client.hdel(key, task)  # 0: another tick took it
    }
    tags = list(taken.values())
    try:
        restored = restore(tags) if tags else 0
    except Exception:  # the broker failed mid-way: keep the records for the next tick
        client.hset(key, mapping={t: f"{taken[t]} {records[t][1]:.0f}" for t in taken})
        raise
    if not client.exists(key):
        client.srem(OWNERS, owner)
    if tags:
        log.warning(
            "worker %s stopped beating: %d reserved task(s) put back on their queues",
            owner,
            restored,
        )
    return restored


def restore_by_tags(tags: Iterable[str]) -> int:
    """kombu's restore of unacked messages by delivery tag (queue, priority and all);
    how many were still unacked (a message acked meanwhile is not restored)."""
    from producer.enqueue import publisher

    done = 0
    with publisher().connection_for_write() as conn:
        channel = conn.default_channel
        client = channel.client
        for tag in tags:
            if client.hexists(channel.unacked_key, tag):
                done += 1
            channel.qos.restore_by_tag(tag)
    return done
