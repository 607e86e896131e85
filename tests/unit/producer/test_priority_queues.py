"""Each priority's sends go to their own broker queue (a real Redis list), and a
worker takes them in the order of `WORKER_QUEUES`: high before anything but
maintenance, bulk last. The broker must never put a campaign in front of a code."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer import send_bulk, send_sms
from producer.embedded_redis import ensure_embedded_redis, stop_embedded_redis
from producer.queues import (
    SEND_BULK_QUEUE,
    SEND_HIGH_QUEUE,
    SEND_QUEUE,
    WORKER_QUEUES,
    celery_config,
    priority_of_queue,
    send_queue,
)
from worker.ops.stack import reset_process_state

KYIV = "380989361131"


@pytest.fixture
def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    url = ensure_embedded_redis(tmp_path / "redis")
    monkeypatch.chdir(tmp_path)  # no stray .env
    for key in [k for k in os.environ if k.startswith("SMSQ_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SMSQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SMSQ_SMSCLUB_TOKEN", "y")
    monkeypatch.setenv("SMSQ_BROKER_URL", url)
    monkeypatch.setenv("SMSQ_RECIPIENT_LIMIT", "off")
    reset_process_state()
    client = redis.Redis.from_url(url)
    try:
        yield client
    finally:
        client.close()
        stop_embedded_redis(tmp_path / "redis")
        monkeypatch.undo()
        reset_process_state()


def test_each_priority_is_published_on_its_own_queue(broker: redis.Redis) -> None:
    def ids(queue: str) -> list[str]:
        found = []
        for raw in broker.lrange(queue, 0, -1):
            body = json.loads(base64.b64decode(json.loads(raw)["body"]))
            found.extend(body[0][0])
        return found

    code = send_sms(KYIV, "code 1", priority="high")
    notice = send_sms(KYIV, "notice")
    sale = send_bulk([KYIV, "380671234561"], "sale")
    assert ids(SEND_HIGH_QUEUE) == [code]
    assert ids(SEND_QUEUE) == [notice]
    assert sorted(ids(SEND_BULK_QUEUE)) == sorted(sale)


def test_workers_take_queues_in_priority_order_every_time(broker: redis.Redis) -> None:
    order = WORKER_QUEUES.split(",")
    assert order.index(SEND_HIGH_QUEUE) < order.index(SEND_QUEUE) < order.index(SEND_BULK_QUEUE)
    assert order[0] == "maintenance" and order[-1] == SEND_BULK_QUEUE
    # kombu's default rotates the queues after each message: bulk could go first.
    assert celery_config()["broker_transport_options"]["queue_order_strategy"] == "priority"


@pytest.mark.parametrize("priority", ["high", "normal", "bulk"])
def test_a_queue_names_its_priority_back(priority: str) -> None:
    assert priority_of_queue(send_queue(priority)) == priority


def test_unknown_queues_and_priorities_are_normal() -> None:
    assert send_queue(None) == SEND_QUEUE
    assert priority_of_queue(None) == priority_of_queue("poll") == "normal"
