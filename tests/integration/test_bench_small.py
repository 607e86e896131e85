"""`make bench`'s machinery in a small run: the shared stack of bench/run.py,
bench/history.py and bench/profile.py (`bench_stack`), the paused fill and timed
drain, the no-op yardstick, single and bulk sends. A change that breaks the
benchmark fails here, in `make test`, instead of in a quarter-hour run."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import redis

from bench import run as bench_run
from producer import send_sms
from producer.queues import broker_url
from worker.ops.stack import reset_process_state


@pytest.fixture
def own_environment() -> Iterator[None]:
    """bench_stack clears SMSQ_*: the package's shared stack gets its own back."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        reset_process_state()


def test_a_small_bench_run_times_each_send_path(
    own_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_run, "N_NOOP", 200)
    monkeypatch.setattr(bench_run, "N_SINGLE", 60)
    monkeypatch.setattr(bench_run, "N_BULK_REQUESTS", 3)
    with bench_run.bench_stack(web=False, prefix="small") as running:
        assert running.pg is None and running.stack.sandbox is not None
        sims = running.stack.sandbox.sandbox.sims
        bench_run.wait_sent([send_sms("243851234561", "warm", provider="keccel")], timeout=30)
        keccel_before, smsclub_before = len(sims["keccel"].requests), len(sims["smsclub"].requests)
        noop = bench_run.bench_noop(redis.Redis.from_url(broker_url()))
        single = bench_run.bench_single(sims["keccel"])
        bulk = bench_run.bench_bulk(sims["smsclub"])
        keccel_sent = bench_run.received(sims["keccel"], keccel_before)
        smsclub_sent = bench_run.received(sims["smsclub"], smsclub_before)
        # A message that ends unsent (the sandbox rejects numbers ending in 0) stops the
        # wait at once, with the reason, instead of after its timeout.
        since, started = len(sims["keccel"].requests), time.monotonic()
        rejected = send_sms("243851234560", "rejected", provider="keccel")
        with pytest.raises(RuntimeError, match="1 of 1 messages ended unsent; the first rejected"):
            bench_run.wait_sent([rejected], sims["keccel"], since, timeout=60)
        waited = time.monotonic() - started
    assert noop > 0 and single > 0 and bulk > 0
    assert (keccel_sent, smsclub_sent) == (60, 300)  # each reached the gateway once, none twice
    assert waited < 10
    assert not any(key.startswith("SMSQ_") for key in os.environ)  # cleared on the way out


def test_a_small_history_run_takes_the_two_stores_in_turn(
    own_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/history.py's path: a second store loaded with history, the send runs on
    both in turn (every process restarted on the other store), then the reads."""
    from bench import history

    monkeypatch.setattr(history, "N_SINGLE", 20)
    monkeypatch.setattr(history, "N_BULK_REQUESTS", 2)
    monkeypatch.setattr(history, "TRIES", 1)
    result = history.run_store("sqlite", 2000)
    empty, full = result.empty, result.full
    assert min(empty.single, full.single, empty.bulk, full.bulk) > 0
    # Each store holds its own runs' messages, `sent`: the runs went to both stores.
    warm_up, run = 16 + 4 * 20, 20 + 2 * 100
    assert empty.active == 1 + warm_up + run  # the stack's first warm message, then one turn
    assert full.active == warm_up + (warm_up + run) + warm_up  # loaded, its turn, the reads
    assert len(full.tick) == len(empty.tick) == history.SAMPLES and full.retention
    assert full.size_mb > empty.size_mb
    rows = history.table(result)
    assert rows[0][0].startswith("single sends") and len(history.cost_table(result)) > 5
    assert not any(key.startswith("SMSQ_") for key in os.environ)
