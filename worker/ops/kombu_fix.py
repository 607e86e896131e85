"""A worker that loses Redis while it holds a task must not end.

kombu 5.7's Redis transport (plain and Sentinel) builds a new connection pool
from the channel's connection info whenever it needs one; on a channel whose
connection is already closed (after a connection error, Celery closes the
connection, and with it the transport), that info is gone, and kombu raises
AttributeError instead of a connection error: handing back the channel's
unacked messages, or acking a task that just finished. Celery takes an
AttributeError for an "Unrecoverable error" and ends the worker (exit 1)
instead of reconnecting. It happens when Redis restarts, or a Sentinel
failover cuts the connection, in the milliseconds between a task's delivery
and its ack (the fault suite's failover met it on both workers at once).

`install()` makes that case the connection error it is: Celery logs it and
reconnects; the messages stay in the broker's `unacked` set, as after a crash
(the broker restores them at its visibility timeout; their rows are settled by
the sweep, the poll lease or `reconcile`, and a second run claims nothing).
"""

from __future__ import annotations

from typing import Any

from producer.kombu_clients import Method, patch_channel


def gone(channel: Any) -> bool:
    """The channel's connection, or the connection's own transport client, is gone."""
    connection = getattr(channel, "connection", None)
    return connection is None or getattr(connection, "client", None) is None


def _refuse_when_gone(original: Method) -> Method:
    import redis

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if gone(self):
            raise redis.exceptions.ConnectionError("the broker connection is closed")
        return original(self, asynchronous=asynchronous)

    return _connparams


def install() -> None:
    """Patch kombu's Redis Channel._connparams once per process (idempotent)."""
    patch_channel("_connparams", _refuse_when_gone)
