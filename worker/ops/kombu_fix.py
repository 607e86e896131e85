"""A worker that loses Redis while it holds a task must not end: kombu 5.7's Redis
transport, closing a channel whose connection has already dropped its transport,
fails to hand back the channel's unacked messages with an AttributeError (its
connection info is None), and Celery takes that for an "Unrecoverable error"
and ends the worker (exit 1) instead of reconnecting. It happens when Redis
restarts or a Sentinel failover cuts the connection in the few milliseconds
between a task's delivery and its ack.

`install()` makes that one case a warning: the messages stay in the broker's
`unacked` set, as after a crash (their rows are settled by the sweep, the lease
or `reconcile`, and the broker restores them at its visibility timeout), and the
worker reconnects. Any other AttributeError is raised as before.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("smsq.kombu")
_installed = False


def _transport_gone(qos: Any) -> bool:
    connection = getattr(qos.channel, "connection", None)
    return connection is None or getattr(connection, "client", None) is None


def install() -> None:
    """Patch kombu's Redis QoS.restore_unacked once per process (idempotent)."""
    global _installed
    if _installed:
        return
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.QoS.restore_unacked

    def restore_unacked(self: Any, client: Any = None) -> Any:
        try:
            return original(self, client)
        except AttributeError:
            if not _transport_gone(self):
                raise
            log.warning(
                "broker connection gone: %d unacknowledged message(s) left in the "
                "broker's unacked set (restored later), reconnecting",
                len(self._delivered),
            )
            self._delivered.clear()
            return None

    kombu_redis.QoS.restore_unacked = restore_unacked
    _installed = True
