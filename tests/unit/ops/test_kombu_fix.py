"""kombu's Redis channel closed after its connection dropped the transport: without
the fix, handing back its unacked messages raises AttributeError (which ends a Celery
worker); with it, the messages stay in the broker's unacked set and nothing raises."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from producer.embedded_redis import ensure_embedded_redis, stop_embedded_redis
from worker.ops import kombu_fix


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("kombu-fix")
    found = ensure_embedded_redis(data_dir)
    yield found
    stop_embedded_redis(data_dir)


def held_message(url: str):  # type: ignore[no-untyped-def]
    """A channel holding one delivered, unacked message (a task a worker holds)."""
    redis.Redis.from_url(url).flushdb()
    conn = Connection(url)
    queue = Queue("fix", Exchange("fix"), "fix")
    Producer(conn.channel(), exchange=queue.exchange).publish(
        {"x": 1}, routing_key="fix", declare=[queue]
    )
    channel = conn.channel()
    held = []
    consumer = Consumer(channel, [queue], callbacks=[lambda body, m: held.append(m)])
    consumer.consume()
    conn.drain_events(timeout=5)
    assert len(held) == 1
    channel._disconnect_pools()  # as on a connection error: the pools are dropped
    channel.connection.client = None  # ... and the connection let go of its transport
    return conn, channel


WITHOUT_FIX = """
import sys
from tests.unit.ops.test_kombu_fix import held_message
_conn, channel = held_message(sys.argv[1])
try:
    channel.close()
except AttributeError as exc:
    print("AttributeError", exc)
"""


def test_without_the_fix_kombu_raises(url: str) -> None:
    """What the fix is for (in a process of its own: the patch is process-wide)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_FIX, url],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "AttributeError" in done.stdout and "hostname" in done.stdout, done.stderr[-2000:]


def test_the_fix_leaves_the_message_unacked_instead_of_raising(url: str) -> None:
    _conn, channel = held_message(url)
    kombu_fix.install()
    kombu_fix.install()  # once is enough; twice changes nothing
    channel.close()  # no AttributeError
    client = redis.Redis.from_url(url)
    assert client.hlen("unacked") == 1  # left for the visibility timeout (or a takeover)
    assert client.llen("fix") == 0
    client.close()


def test_any_other_attribute_error_is_raised(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kombu_fix.install()
    conn = Connection(url)
    qos = conn.channel().qos
    qos._delivered["tag"] = object()

    def broken(client=None):  # type: ignore[no-untyped-def]
        raise AttributeError("something else")

    monkeypatch.setattr(qos.channel, "conn_or_acquire", broken)
    with pytest.raises(AttributeError, match="something else"):  # the transport is there
        qos.restore_unacked()
    qos._delivered.clear()
    conn.release()
