"""Stops that end: a worker or beat told to stop exits within STOP_SECONDS, Redis or not.

Celery's warm shutdown waits for the running tasks, then says goodbye to the
broker: the worker's event heartbeat is published with retries that never
end, kombu hands the unacked messages back, and beat releases redbeat's lock.
When Redis is unreachable (stopped, or a host that no longer answers), those
goodbyes block the main thread, and systemd or Kubernetes have to SIGKILL.

So the stop request arms a watchdog thread: once STOP_SECONDS have passed and
no task of this process is still running, it exits by itself (`os._exit`,
after flushing the logs). A task still running (a send waiting for its
answer) is waited for, since finishing it is worth more than a quick exit;
each is bounded by its own timeouts. What a forced exit leaves is what a
crash leaves, and smsq is built for that: the heartbeat lapses, beat puts the
reserved tasks back (`worker.resilience.takeover`) and settles claims
(`reconcile`); beat's lock expires after `redbeat_lock_timeout`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time

log = logging.getLogger("smsq.shutdown")

STOP_SECONDS = 8.0  # under the 10 s that rollouts and `systemctl stop` are promised
CHECK_SECONDS = 0.2

_lock = threading.Lock()
_running = 0  # tasks of this process between task_prerun and task_postrun
_armed: threading.Thread | None = None


def task_started() -> None:
    global _running
    with _lock:
        _running += 1


def task_ended() -> None:
    global _running
    with _lock:
        _running = max(0, _running - 1)


def running() -> int:
    with _lock:
        return _running


def arm(what: str, seconds: float = STOP_SECONDS) -> None:
    """A stop was asked for: exit `seconds` from now (or when the last running task
    ends, if later) unless the process has exited by itself. Once per process."""
    global _armed
    with _lock:
        if _armed is not None and _armed.is_alive():
            return
        _armed = threading.Thread(
            target=_watch, args=(what, time.monotonic() + seconds), name="smsq-stop", daemon=True
        )
        _armed.start()


def _watch(what: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        time.sleep(CHECK_SECONDS)
    said = False
    while running():
        if not said:
            log.warning("%s: stopping once %d running task(s) end", what, running())
            said = True
        time.sleep(CHECK_SECONDS)
    log.warning(
        "%s: still not stopped %.0f s after the stop request (the broker unreachable?): "
        "exiting now; what it held is settled as after a crash",
        what,
        STOP_SECONDS,
    )
    _exit()


def _exit() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # exiting anyway
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)
