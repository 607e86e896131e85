"""kombu's Redis channel whose connection is closed: without the fix, handing back its
unacked messages, or acking a finished task on it, raises AttributeError (which ends
a Celery worker); with it, each is a connection error, which Celery's own handling
logs and rides out, and the message stays in the broker's unacked set."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from producer.embedded_redis import ensure_embedded_redis, stop_embedded_redis
from worker.ops import kombu_fix

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("kombu-fix")
    found = ensure_embedded_redis(data_dir)
    yield found
    stop_embedded_redis(data_dir)


def held_message(url: str):  # type: ignore[no-untyped-def]
    """(connection, channel, message): the channel holds one delivered, unacked message
    (a task a worker holds) and has lost its transport, as after a connection error."""
    redis.Redis.from_url(url).flushdb()
    conn = Connection(url)
    queue = Queue("fix", Exchange("fix"), "fix")
    Producer(conn.channel(), exchange=queue.exchange).publish(
        {"x": 1}, routing_key="fix", declare=[queue]
    )
    channel = conn.channel()
    held = []
    Consumer(channel, [queue], callbacks=[lambda body, m: held.append(m)]).consume()
    conn.drain_events(timeout=5)
    assert len(held) == 1
    channel._disconnect_pools()  # a connection error drops the pools...
    channel.connection.client = None  # ... and the closing connection its transport
    return conn, channel, held[0]


WITHOUT_FIX = """
import logging, sys
from tests.unit.ops.test_kombu_fix import held_message
conn, channel, message = held_message(sys.argv[1])
errors = conn.connection_errors
for step in (lambda: conn.maybe_close_channel(channel),
             lambda: message.ack_log_error(logging.getLogger(), errors)):
    try:
        step()
        print("ok")
    except AttributeError as exc:
        print("AttributeError", exc)
"""


def test_without_the_fix_kombu_raises_attribute_errors(url: str) -> None:
    """What the fix is for (in a process of its own: the patch is process-wide)."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_FIX, url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("AttributeError") for line in lines), (
        done.stdout + done.stderr[-2000:]
    )


def test_with_the_fix_both_are_connection_errors_and_the_message_stays(url: str) -> None:
    kombu_fix.install()
    kombu_fix.install()  # once is enough; twice changes nothing
    conn, channel, message = held_message(url)
    conn.maybe_close_channel(channel)  # hands back nothing, raises nothing
    message.ack_log_error(logging.getLogger("test"), conn.connection_errors)  # logged
    client = redis.Redis.from_url(url)
    assert client.hlen("unacked") == 1  # left for the visibility timeout (or a takeover)
    assert client.llen("fix") == 0
    client.close()


def test_a_live_channel_is_untouched(url: str) -> None:
    kombu_fix.install()
    redis.Redis.from_url(url).flushdb()
    conn = Connection(url)
    channel = conn.channel()
    assert not kombu_fix.gone(channel)
    channel.client.ping()  # builds its pool through the patched _connparams
    conn.release()
