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

from typing import Any

_installed = False


def install() -> None:
    """Patch kombu's Redis Channel._create_client once per process (idempotent)."""
    global _installed
    if _installed:
        return
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.Channel._create_client

    def _create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:  # the consumer loop's own client, which kombu already keeps
            return original(self, asynchronous=True)
        pool = self.pool
        client = self.__dict__.get("_smsq_client")
        if client is None or client.connection_pool is not pool:
            client = original(self, asynchronous=False)
            self.__dict__["_smsq_client"] = client
        return client

    kombu_redis.Channel._create_client = _create_client
    _installed = True
