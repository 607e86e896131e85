"""Counters add up in the process and reach Redis in one pipeline per flush; a flush
while Redis is away keeps them for the next one."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from worker import redis_client
from worker.ops import metrics


class _Counting(fakeredis.FakeRedis):
    pipelines = 0

    def pipeline(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        type(self).pipelines += 1
        return super().pipeline(*args, **kwargs)


def test_many_increments_are_one_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Counting()
    monkeypatch.setattr(redis_client, "shared", lambda: fake)
    monkeypatch.setattr(metrics, "_auto", False)  # only the explicit flushes below
    for _ in range(100):
        metrics.SEND_REQUESTS.labels("keccel").inc()
        metrics.MESSAGES.labels("keccel", "sent").inc(2)
    assert fake.hgetall(metrics.HASH) == {}  # nothing sent yet
    before = _Counting.pipelines
    metrics.flush()
    assert _Counting.pipelines - before == 1
    assert fake.hget(metrics.HASH, "smsq_send_requests|keccel") == b"100"
    assert fake.hget(metrics.HASH, "smsq_messages|keccel|sent") == b"200"
    metrics.flush()  # nothing pending: no round trip
    assert _Counting.pipelines - before == 1


def test_counts_survive_a_failed_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    class Down:
        def pipeline(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise redis.ConnectionError("away")

    monkeypatch.setattr(redis_client, "shared", lambda: Down())
    monkeypatch.setattr(metrics, "_auto", False)
    metrics.POLLS.labels("smsclub").inc(3)
    metrics.flush()
    fake = fakeredis.FakeRedis()
    monkeypatch.setattr(redis_client, "shared", lambda: fake)
    metrics.POLLS.labels("smsclub").inc()
    metrics.flush()
    assert fake.hget(metrics.HASH, "smsq_status_polls|smsclub") == b"4"


def test_the_collector_includes_this_processs_own_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fakeredis.FakeRedis()
    monkeypatch.setattr(redis_client, "shared", lambda: fake)
    metrics.CALLBACKS.labels("kingsms", "accepted").inc()
    families = {f.name: f for f in metrics.SharedCollector().collect()}
    [sample] = families["smsq_dlr_callbacks"].samples
    assert sample.value == 1.0 and sample.labels == {"provider": "kingsms", "result": "accepted"}
