"""The beat scheduler: redbeat's, made to ride out a Redis outage.

redbeat keeps the schedule and a lock in Redis, so several beat processes on
several hosts are safe: the one holding the lock sends the periodic tasks,
the others wait for it. Its `tick` lets a Redis error escape, which ends the
beat process when Redis restarts; this subclass logs, waits and carries on,
and if the lock expired during the outage it takes it back only if no other
beat has taken it meanwhile (so each periodic job still runs once per period).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from kombu.exceptions import OperationalError
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, RedBeatScheduler, get_redis
from redis.exceptions import LockError

log = logging.getLogger("smsq.beat")

OUTAGE_RETRY_SECONDS = 1.0
_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OperationalError)


class SmsqScheduler(RedBeatScheduler):  # type: ignore[misc]
    """redbeat's scheduler that survives Redis restarts instead of exiting."""

    _standby = False

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        # Beat only ever queues maintenance (tick, balance checks, the dashboard's
        # roll-up), whose workers send no task events: without `task-sent` too, Flower
        # lists none of them (celery reads this setting at each publish).
        app.conf.task_send_sent_event = False
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self) -> None:
        """Write the schedule to Redis, waiting for Redis if it is down at start."""
        while True:
            try:
                super().setup_schedule()
                return
            except _REDIS_DOWN as exc:
                log.warning("beat: Redis unavailable at start (%s); waiting", type(exc).__name__)
                time.sleep(OUTAGE_RETRY_SECONDS)

    def tick(self, min: Any = min, **kwargs: Any) -> float:
        try:
            needs_lock = self.lock_key and (self.lock is None or self._standby)
            if needs_lock and not self._take_lock():
                return float(self.max_interval)
            return float(super().tick(min=min, **kwargs))
        except LockError:
            log.warning("beat: lost the beat lock (expired during an outage?); trying to retake it")
            self._standby = True
            return float(self.max_interval)
        except _REDIS_DOWN as exc:
            log.warning(
                "beat: Redis unavailable (%s); trying again in %.0fs",
                type(exc).__name__,
                OUTAGE_RETRY_SECONDS,
            )
            return OUTAGE_RETRY_SECONDS

    def _take_lock(self) -> bool:
        """Take the beat lock without waiting; False while another beat holds it."""
        if self.lock is None:
            client = get_redis(self.app)
            lock = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
            lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
            self.lock = lock
        if self.lock.acquire(blocking=False):
            log.info("beat: acquired the beat lock")
            self._standby = False
            return True
        return False
