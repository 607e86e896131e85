"""One redis-py client per kombu channel, not one per broker command.

kombu 5.7's Redis transport builds a new `redis.Redis` around the channel's
connection pool for every publish, task-event and ack it makes outside the
consumer loop (`Channel.conn_or_acquire` -> `_create_client`). redis-py 7 fills
a dictionary of about 250 response callbacks in each client's constructor, so
that object was 13 % of a `send_sms` call's CPU (a profile of 500 calls: 0.18 of
1.32 s) and a share of every task in the workers. A client holds no connection
of its own (it borrows from the pool per command) and is thread-safe, so the
channel keeps one, built again when the channel's pool changes (a reconnect).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Method = Callable[..., Any]


def patch_channel(method: str, wrap: Callable[[Method], Method]) -> None:
    """Replace kombu's Redis `Channel.<method>` by `wrap(original)`, once per process
    (idempotent: the patched method carries a mark)."""
    from kombu.transport import redis as kombu_redis

    current = getattr(kombu_redis.Channel, method)
    if getattr(current, "_smsq_patched", False):
        return
    patched = wrap(current)
    patched._smsq_patched = True  # type: ignore[attr-defined]
    setattr(kombu_redis.Channel, method, patched)


def _one_client(original: Method) -> Method:
    def _create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:  # the consumer loop's own client, which kombu already keeps
            return original(self, asynchronous=True)
        pool = self.pool
        client = self.__dict__.get("_smsq_client")
        if client is None or client.connection_pool is not pool:
            client = original(self, asynchronous=False)
            self.__dict__["_smsq_client"] = client
        return client

    return _create_client


def install() -> None:
    """Patch kombu's Redis Channel._create_client once per process (idempotent)."""
    patch_channel("_create_client", _one_client)
