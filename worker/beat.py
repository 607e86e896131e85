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
from typing import Any

import redis
from kombu.exceptions import OperationalError
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, RedBeatScheduler, get_redis
from redis.exceptions import LockError

log = logging.getLogger("smsq.beat")

OUTAGE_RETRY_SECONDS = 1.0
_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OperationalError)


class SmsqScheduler(RedBeatScheduler):  # type: ignore[misc]
    """redbeat's scheduler that survives Redis restarts instead of exiting, and stops
    within seconds of SIGTERM even while Redis is unreachable."""

    _standby = False
    _setup_pending = False

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        # Beat only ever queues maintenance (tick, balance checks, the dashboard's
        # roll-up), whose workers send no task events: without `task-sent` too, Flower
        # lists none of them (celery reads this setting at each publish).
        app.conf.task_send_sent_event = False
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self) -> None:
        """Write the schedule to Redis; if Redis is down at start, the first tick that
        reaches it does (waiting here, inside the constructor, would make SIGTERM build
        a second scheduler in its handler and wait there too)."""
        try:
            super().setup_schedule()
            self._setup_pending = False
        except _REDIS_DOWN as exc:
            if not self._setup_pending:
                log.warning("beat: Redis unavailable at start (%s); waiting", type(exc).__name__)
            self._setup_pending = True

    def tick(self, min: Any = min, **kwargs: Any) -> float:
        try:
            if self._setup_pending:
                self.setup_schedule()
                if self._setup_pending:
                    return OUTAGE_RETRY_SECONDS
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

    def close(self) -> None:
        """SIGTERM: release the lock if Redis answers, and exit either way. Redis down,
        the lock expires by itself after `redbeat_lock_timeout` (another beat then
        takes over). Called twice by Celery (its signal handler, then `start`'s finally)."""
        from worker.ops import shutdown

        shutdown.arm("beat")
        try:
            super().close()
        except (*_REDIS_DOWN, LockError) as exc:
            log.warning("beat: lock not released (%s); it expires by itself", type(exc).__name__)
            self.lock = None

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
