"""kombu's Redis channel keeps one redis-py client for its own commands (publish,
acks, events) instead of building one per command, and builds a new one when its
pool changes (a reconnect); what it publishes still arrives."""

from __future__ import annotations

from kombu import Connection, Exchange, Producer, Queue

from producer import kombu_clients


def test_one_client_per_channel_until_its_pool_changes(real_redis: str) -> None:
    kombu_clients.install()
    kombu_clients.install()  # twice changes nothing
    with Connection(real_redis) as conn:
        channel = conn.channel()
        first = channel._create_client()
        assert channel._create_client() is first
        with channel.conn_or_acquire() as client:
            assert client is first
        channel._disconnect_pools()  # a reconnect: the pool is built again
        again = channel._create_client()
        assert again is not first
        assert again.connection_pool is channel.pool
        assert channel._create_client(asynchronous=True) is not again  # the loop's own


def test_what_the_channel_publishes_arrives(real_redis: str) -> None:
    kombu_clients.install()
    queue = Queue("clients", Exchange("clients"), "clients")
    with Connection(real_redis) as conn:
        producer = Producer(conn.channel(), exchange=queue.exchange)
        for n in range(3):
            producer.publish({"n": n}, routing_key="clients", declare=[queue])
        got = [queue(conn.channel()).get(no_ack=True) for _ in range(3)]
    assert [m.payload["n"] for m in got if m is not None] == [0, 1, 2]


def test_each_patch_is_applied_once_per_process() -> None:
    """A second install would wrap the patched method again (two clients per channel)."""
    from kombu.transport import redis as kombu_redis

    from worker.ops import kombu_fix

    kombu_clients.install()
    kombu_fix.install()
    create_client, connparams = kombu_redis.Channel._create_client, kombu_redis.Channel._connparams
    kombu_clients.install()
    kombu_fix.install()
    assert kombu_redis.Channel._create_client is create_client
    assert kombu_redis.Channel._connparams is connparams
    assert create_client.__name__ == "_create_client" and connparams.__name__ == "_connparams"
