"""A dead worker's reserved tasks go back to their queue at its heartbeat lapse; a live
worker's, and tasks that had started, are left alone.

A real (embedded) Redis and a real kombu consumer in a subprocess: it takes send
tasks off the `send` queue without acking them (as a worker holding prefetched or
countdown tasks does), records them as `worker.celery_app` does on `task_received`,
and is SIGKILLed. Its heartbeat lapsing is played by deleting its key (the TTL is
30 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer.embedded_redis import ensure_embedded_redis, stop_embedded_redis
from producer.enqueue import publish_send, reset_publisher
from producer.queues import SEND_QUEUE
from tests.unit.conftest import isolate, restore
from worker import redis_client
from worker.resilience import liveness, takeover
from worker.resilience import sweeps as maintenance

ROOT = Path(__file__).resolve().parents[3]

# Takes `count` tasks off the send queue unacked, records them, prints them, waits.
CONSUMER = """
import json, sys, time
from kombu import Consumer, Exchange, Queue
from producer.enqueue import publisher
from worker.resilience import liveness, takeover

count = int(sys.argv[1])
start = sys.argv[2:] == ["start"]  # every task it takes starts (and hangs there)
held = []
conn = publisher().connection_for_read()
channel = conn.channel()
channel.basic_qos(0, count, False)
queue = Queue("send", Exchange("send"), "send")

def on_message(body, message):
    held.append(message)
    task_id = message.headers["id"]
    takeover.received(task_id, message.delivery_tag, body[1])
    if start:
        takeover.started(task_id, body[1])

with Consumer(channel, [queue], callbacks=[on_message], no_ack=False):
    while len(held) < count:
        conn.drain_events(timeout=10)
print(json.dumps({"me": liveness.process_id(),
                  "held": [[m.headers["id"], m.delivery_tag] for m in held]}), flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("takeover-redis")
    url = ensure_embedded_redis(data_dir)
    yield url
    stop_embedded_redis(data_dir)


@pytest.fixture
def client(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str
) -> Iterator[redis.Redis]:
    isolate(monkeypatch, tmp_path, SMSQ_BROKER_URL=redis_url)
    reset_publisher()
    redis_client.forget()
    c = redis.Redis.from_url(redis_url)
    c.flushdb()
    monkeypatch.setattr(liveness, "TRUST_AFTER", 0)  # the test's Redis is seconds old
    yield c
    c.close()
    reset_publisher()
    redis_client.forget()
    restore(monkeypatch)


def hold_and_die(count: int, start: bool = False) -> tuple[str, list[list[str]]]:
    """A consumer takes `count` send tasks unacked, records them (`start`: and starts
    them), and is SIGKILLed: (its claim id, [[task id, delivery tag], ...])."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, str(count), *(["start"] if start else [])],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "the consumer printed nothing"
        found = json.loads(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    return found["me"], found["held"]


def queued_task_ids(client: redis.Redis) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in client.lrange(SEND_QUEUE, 0, -1)]


def test_a_dead_workers_reserved_tasks_go_back_to_the_queue_once(client: redis.Redis) -> None:
    for n in range(3):
        publish_send([f"m{n}"])
    me, held = hold_and_die(3)
    assert client.llen(SEND_QUEUE) == 0 and client.hlen("unacked") == 3  # held, unacked
    assert client.hlen(takeover.KEY.format(me)) == 3

    assert takeover.restore_dead() == 0  # its heartbeat has not lapsed yet: alive
    assert client.llen(SEND_QUEUE) == 0

    client.delete(liveness.KEY.format(me))  # the lapse (30 s after its last beat)
    assert takeover.restore_dead() == 3
    assert sorted(queued_task_ids(client)) == sorted(task for task, _tag in held)
    assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0
    assert not client.exists(takeover.KEY.format(me))
    assert me.encode() not in client.smembers(takeover.OWNERS)
    assert takeover.restore_dead() == 0  # a second tick restores nothing again
    assert client.llen(SEND_QUEUE) == 3


def test_a_started_send_is_restored_unless_it_carries_a_claim_token(client: redis.Redis) -> None:
    """A started send claims only `queued` rows, so a second run is harmless; one under
    a claim token would take up rows `sending` under it, whose request may be made."""
    publish_send(["plain"])
    publish_send(["retaken"], claim_token="c" * 32)
    me, _held = hold_and_die(2, start=True)
    client.delete(liveness.KEY.format(me))
    result = maintenance.tick(lambda ids: None, lambda p, ids: None)
    assert result.taken_over == 1
    [restored] = [json.loads(raw) for raw in client.lrange(SEND_QUEUE, 0, -1)]
    assert restored["headers"]["argsrepr"] == "[['plain']]"
    assert client.hlen("unacked") == 1  # the token's one stays for kombu (and the sweep)


def test_a_task_that_is_over_leaves_no_record(client: redis.Redis) -> None:
    takeover.received("task-a", "tag-a")
    takeover.received("task-b", "tag-b")  # a record from before its token was known
    takeover.received("task-c", "tag-c", {"claim_token": "t" * 32})  # never recorded
    takeover.started("task-a", {})
    takeover.started("task-b", {"claim_token": "t" * 32})
    key = takeover.KEY.format(liveness.process_id())
    assert client.hkeys(key) == [b"task-a"]
    takeover.done("task-a")
    assert client.hlen(key) == 0
    liveness.stop_heartbeat()


def test_the_restored_task_is_taken_next_before_the_backlog(client: redis.Redis) -> None:
    publish_send(["reserved"])
    me, _held = hold_and_die(1)
    for n in range(5):
        publish_send([f"backlog{n}"])
    client.delete(liveness.KEY.format(me))
    assert takeover.restore_dead() == 1
    head = json.loads(client.lrange(SEND_QUEUE, -1, -1)[0])  # BRPOP takes from the right
    assert head["headers"]["argsrepr"] == "[['reserved']]"


def test_a_record_that_kombu_may_have_restored_itself_is_left_alone() -> None:
    now = time.time()
    records = {
        "fresh": ("tag-1", now - 30),
        "old": ("tag-2", now - takeover.TRUSTED_FOR - 1),
    }
    assert takeover.restorable(records, now) == {"fresh": "tag-1"}
    assert takeover.parse(b"tag-3 1700000000") == ("tag-3", 1700000000.0)
    assert takeover.parse("tag-4") == ("tag-4", 0.0)


def test_a_warm_stop_drops_the_record(client: redis.Redis) -> None:
    takeover.received("task-a", "tag-a")
    me = liveness.process_id()
    assert client.hget(takeover.KEY.format(me), "task-a").startswith(b"tag-a ")
    takeover.forget_own()
    assert not client.exists(takeover.KEY.format(me))
    liveness.stop_heartbeat()


def test_nothing_breaks_while_redis_is_unreachable(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.conftest import NO_BROKER

    monkeypatch.setenv("SMSQ_BROKER_URL", NO_BROKER)
    from producer.queues import broker_url
    from producer.settings import reload_settings

    reload_settings()
    broker_url.cache_clear()
    takeover.received("task-b", "tag-b")  # logged, not raised
    takeover.done("task-b")
    assert takeover.restore_dead() == 0
