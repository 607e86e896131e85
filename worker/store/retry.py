"""Store writes retried while the store is unavailable, for a bounded time.

After a gateway has answered, its answer (the message ids it issued, or the
error) lives only in the worker's memory until it is committed. If the store is
down at that moment (PostgreSQL restarting or failing over, a dropped
connection, SQLite locked past its busy timeout), giving up would leave the
rows `sending` and turn a sent message into an uncertain one. So such writes
are tried again with backoff for up to STORE_RETRY_SECONDS. That is under the
configured soft time limit (240 s), though the threads pool the worker runs
enforces no time limit. Each try runs the whole write again in a new session:
a failed try committed nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from producer import db

log = logging.getLogger("smsq.store_retry")
T = TypeVar("T")

STORE_RETRY_SECONDS = 150.0
FIRST_DELAY = 0.25
MAX_DELAY = 5.0


def durably(
    what: str,
    write: Callable[[], T],
    budget: float = STORE_RETRY_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`write()`, run again while it fails because the store is unavailable, until
    `budget` seconds have passed; any other error, or the last outage, is raised."""
    deadline = time.monotonic() + budget
    delay = FIRST_DELAY
    tries = 0
    while True:
        tries += 1
        try:
            value = write()
        except Exception as exc:
            if not db.store_unavailable(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning(
                "store unavailable while %s (%s); try %d again in %.2fs",
                what,
                db.error_name(exc),
                tries + 1,
                delay,
            )
            sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
            continue
        if tries > 1:
            log.info("store reachable again: %s after %d tries", what, tries)
        return value
