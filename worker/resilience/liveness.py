"""Which worker processes are alive, so a dead worker's claimed rows are settled fast.

A row moves `queued -> sending` with the claiming process's id in
`claimed_by`. While that process lives, a daemon thread keeps a Redis key
`smsq:alive:<id>` with a short TTL. When the key is gone (the process was
killed: SIGKILL, OOM, a lost host), beat's tick settles its `sending` rows
after DEAD_AFTER seconds instead of waiting SMSQ_STUCK_SENDING_SECONDS, the
bound kept for a live process whose task hangs.

A missing key only counts when Redis has been up longer than the TTL: a Redis
restarted without its data forgets every key, and the heartbeats need a beat
to come back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable

import redis

from producer.queues import broker_url
from worker import redis_client

log = logging.getLogger("smsq.liveness")

KEY = "smsq:alive:{}"
BEAT_SECONDS = 5.0
TTL_SECONDS = 30  # six missed beats before a live process looks dead
DEAD_AFTER = 45.0  # a claim this old whose process key is gone was lost with its worker
# `claimed_by` of a row whose worker gave up its claim after an uncertain send (the
# answer was lost): settled like a dead worker's row, once its claim is DEAD_AFTER old.
RELEASED = "released"
# Redis up for less than this may have lost its keys (a restart without its data):
# no process counts as dead until the heartbeats have had time to come back.
TRUST_AFTER = TTL_SECONDS + BEAT_SECONDS

_lock = threading.Lock()
_identity: tuple[int, str] | None = None  # (pid, id): a forked child gets its own
_thread: threading.Thread | None = None
_beat_url: str | None = None  # the Redis the last heartbeat reached
_stop = threading.Event()


def process_id() -> str:
    """This process's claim id: host, pid and a random part (pids are reused)."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:
        _identity = (pid, f"{socket.gethostname()[:40]}:{pid}:{uuid.uuid4().hex[:8]}")
    return _identity[1]


def _beat_once() -> bool:
    global _beat_url
    try:
        redis_client.shared().set(KEY.format(process_id()), "1", ex=TTL_SECONDS)
        _beat_url = broker_url()
        return True
    except (redis.RedisError, OSError, RuntimeError):
        log.debug("heartbeat not written", exc_info=True)
        return False


def _run() -> None:
    while not _stop.wait(BEAT_SECONDS):
        _beat_once()


def ensure_heartbeat() -> str:
    """Start this process's heartbeat (once per process) and return its claim id.

    Called before every claim, so any process that claims rows (a worker, a
    test, a script) is seen alive while it runs.
    """
    global _thread
    pid_id = process_id()
    if _thread is not None and _thread.is_alive() and _identity and _identity[0] == os.getpid():
        if _beat_url != broker_url():  # another Redis (a test's stack, the CLI's): beat there now
            _beat_once()
        return pid_id
    with _lock:
        if _thread is None or not _thread.is_alive():
            _stop.clear()
            _beat_once()
            _thread = threading.Thread(target=_run, name="smsq-heartbeat", daemon=True)
            _thread.start()
    return pid_id


def stop_heartbeat() -> None:
    """Warm shutdown: stop beating and drop the key (nothing of ours is claimed any more)."""
    global _thread
    _stop.set()
    if _thread is not None:
        _thread.join(timeout=2)
        _thread = None
    try:
        redis_client.shared().delete(KEY.format(process_id()))
    except (redis.RedisError, OSError, RuntimeError):
        log.debug("heartbeat key not removed", exc_info=True)


def dead(claimers: Iterable[str]) -> set[str]:
    """The claim ids among `claimers` whose process has stopped beating.

    Empty when Redis cannot tell: unreachable, or up for less than the TTL (a
    restart without data would make every process look dead).
    """
    names = sorted(set(claimers))
    if not names:
        return set()
    try:
        client = redis_client.shared()
        uptime = int(client.info("server").get("uptime_in_seconds", 0))
        if uptime < TRUST_AFTER:
            return set()
        alive = client.mget([KEY.format(n) for n in names])
    except (redis.RedisError, OSError, RuntimeError, ValueError):
        log.debug("liveness unknown", exc_info=True)
        return set()
    return {name for name, value in zip(names, alive, strict=True) if value is None}
