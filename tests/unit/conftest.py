"""Shared set-up of unit tests that use the real store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer import db
from producer.queues import broker_url
from producer.settings import reload_settings

NO_BROKER = "redis://127.0.0.1:1/0"  # nothing listens: publishing and metrics fail fast


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> None:
    """A clean SMSQ_* environment: a store of its own under `tmp_path`, no broker,
    no stray `.env`, plus `env` (e.g. SMSQ_KECCEL_TOKEN="k")."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("SMSQ_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SMSQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SMSQ_BROKER_URL", NO_BROKER)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _forget_process_state()


def restore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    _forget_process_state()
    _drop_pending_metrics()


def _drop_pending_metrics() -> None:
    """Counts the isolated test made while its broker was unreachable stay pending in
    this process, and the metrics thread (or its exit hook) would push them to the
    broker of the environment restored: with none set, an embedded Redis started under
    ./var, after the session's check for servers left behind. They belong to a store
    and broker that are gone: dropped."""
    from worker.ops import metrics

    with metrics._lock:
        metrics._pending.clear()


def _forget_process_state() -> None:
    """Settings, the broker URL and the store engine are cached per process."""
    reload_settings()
    broker_url.cache_clear()
    db.reset_engine()


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """`isolate` with no extra settings, undone after the test."""
    isolate(monkeypatch, tmp_path)
    yield monkeypatch
    restore(monkeypatch)


@pytest.fixture(scope="module")
def real_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real embedded Redis for one test module (the limits' counters); stopped after."""
    from producer.embedded_redis import ensure_embedded_redis, stop_embedded_redis

    data_dir = tmp_path_factory.mktemp("redis")
    url = ensure_embedded_redis(data_dir)
    yield url
    stop_embedded_redis(data_dir)


def flush(url: str) -> None:
    """Empty the Redis at `url` (every test starts with fresh counters)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _no_counts_from_earlier_tests() -> Iterator[None]:
    """Metric counts wait in the process for their flush (and are kept while the broker
    is away, as it is in most unit tests): each test starts with none pending."""
    from worker.ops import metrics

    with metrics._lock:
        metrics._pending.clear()
    yield
