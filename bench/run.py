"""`make bench`: smsq against bare Celery on the embedded stack, one table.

The stack: embedded Redis, the store, two worker processes (threads pool,
`-c 4` each), beat, the gateway simulators over loopback; started once per store,
SQLite (WAL) and a database of an embedded PostgreSQL (tests/pg.py), each with
its own no-op and every measure, one result column each. Measured:

- no-op: `smsq.noop` (bench/app.py) on the same queue, acks, prefetch;
- single sends: Keccel `send_sms`, one request per message;
- bulk: SMSClub `send_bulk`, 100 numbers per request, in recipients/s;
- the producer: `send_sms` from one thread, `send_bulk` of 10,000, `POST /v1/messages`
  at 4 clients (bench/producer_path.py);
- latency at idle: `send_sms` returning -> the simulator receiving the request;
- the rate limit: SMSClub at 9/s through two 1-thread worker processes;
- priorities: 50 high codes during a campaign saturating 9/s (bench/priority.py);
- SMSClub's own limit: bulk at 9 requests/s x 100 numbers, the share of 900
  recipients/s used, as the simulator received them;
- peak RSS (VmHWM) of each worker process and its children.
Throughputs are timed from the moment the workers start consuming a queue
already filled (consumers cancelled while it fills) until the last message is
`sent` in the store.

    .venv/bin/python bench/run.py [--store sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from sqlmodel import func, select

from bench import NOOP_COUNTER, NOOP_TASK, priority, producer_path
from producer import db, send_bulk, send_sms
from producer.enqueue import publisher
from producer.models import Message
from producer.queues import SEND_BULK_QUEUE, SEND_QUEUE, broker_url
from worker.gateways.sandbox.base import ProviderSim, max_in_window
from worker.ops.stack import Stack

if TYPE_CHECKING:
    from tests.pg import EmbeddedPostgres

RATE = 9
SENT_OR_LATER = ("sent", "delivered", "undelivered", "expired")
NEVER_SENT = ("failed", "rejected")
FAIL_FAST_SECONDS = 2.0
API_KEY = "bench-key-0123456789"
BENCH_ENV = {
    "SMSQ_POLL_SCHEDULE": "3600",  # no polls during the run: sends only
    "SMSQ_API_KEYS": f"bench:{API_KEY}",
    "SMSQ_API_KEY_LIMIT": "1000000/minute",  # the HTTP row measures the API, not its quota
    "SMSQ_TICK_SECONDS": "2",
    "SMSQ_SWEEP_AFTER_SECONDS": "300",
}
N_NOOP = 3000
N_SINGLE = 2000
N_BULK_REQUESTS = 200  # 20,000 recipients: start-up does not dominate
N_LATENCY = 60
N_RATE = 180
N_LIMITED_REQUESTS = 100  # x 100 numbers: 10,000 recipients, about 11 s at 900/s
PER_REQUEST = 100  # SMSClub's numbers per request (the bench's bulk requests)
SEND_PATHS = {"keccel": "/message.asp", "smsclub": "/sms/send"}  # send routes, path ends
STORES = ("sqlite", "postgres")

Row = tuple[str, str, str, str]  # measure, result, ratio, target


def wait_until(done: Callable[[], bool], timeout: float = 300.0, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(every)


def sent_ids(ids: list[str]) -> set[str]:
    """Those of `ids` that are `sent` or later in the store (500 a query)."""
    found: set[str] = set()
    with db.session() as s:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            found.update(
                s.exec(
                    select(Message.id).where(
                        Message.id.in_(chunk),  # type: ignore[union-attr]
                        Message.status.in_(SENT_OR_LATER),  # type: ignore[attr-defined]
                    )
                ).all()
            )
    return found


def sent_count(ids: list[str]) -> int:
    return len(sent_ids(ids))


def received(sim: ProviderSim, since: int) -> int:
    """Recipients of the send requests `sim` answered after its first `since` requests."""
    path = SEND_PATHS[sim.name]
    return sum(
        r.recipients for r in sim.requests[since:] if r.path.endswith(path) and r.status < 400
    )


def never_sent(ids: list[str]) -> list[tuple[str, str, str | None]]:
    """(id, status, error) of those of `ids` that ended without being sent (500 a query)."""
    found: list[tuple[str, str, str | None]] = []
    with db.session() as s:
        for start in range(0, len(ids), 500):
            query = select(Message.id, Message.status, Message.error).where(
                Message.id.in_(ids[start : start + 500]),  # type: ignore[union-attr]
                Message.status.in_(NEVER_SENT),  # type: ignore[attr-defined]
            )
            found += [(i, status, error) for i, status, error in s.exec(query).all()]
    return found


def wait_sent(
    ids: list[str], sim: ProviderSim | None = None, since: int = 0, timeout: float = 300.0
) -> None:
    """Until every one of `ids` is `sent` or later in the store. The bench's process
    also runs the simulators, so the wait keeps off its CPU: first until `sim` has
    received as many recipients (an in-process count; none is `sent` before its
    request arrives), then the store, polled only for the ids not yet seen sent.
    When the count has not moved for FAIL_FAST_SECONDS, it asks whether any has ended
    unsent (failed, rejected): then it raises at once, with the reason, instead of
    waiting out the timeout. A wait that moves asks nothing more."""
    deadline = time.monotonic() + timeout
    pending = list(ids)
    last_count, still_since = -1, time.monotonic()

    def fail_fast(count: int) -> None:
        nonlocal last_count, still_since
        if count != last_count:
            last_count, still_since = count, time.monotonic()
            return
        if time.monotonic() - still_since < FAIL_FAST_SECONDS:
            return
        still_since = time.monotonic()
        lost = never_sent(pending)
        if lost:
            _id, status, error = lost[0]
            raise RuntimeError(
                f"{len(lost)} of {len(ids)} messages ended unsent; the first {status}: {error}"
            )

    if sim is not None:

        def received_all() -> bool:
            count = received(sim, since)
            fail_fast(count)
            return count >= len(ids)

        wait_until(received_all, timeout, 0.05)

    def done() -> bool:
        nonlocal pending
        seen = sent_ids(pending)
        pending = [i for i in pending if i not in seen]
        fail_fast(len(pending))
        return not pending

    wait_until(done, max(1.0, deadline - time.monotonic()), 0.1)


class Paused:
    """Workers stop consuming `queue` while it fills; timing starts on resume. Each
    control call returns once every worker has answered (`limit`), not after its
    whole timeout, which would be timed too."""

    def __init__(self, queue: str = SEND_QUEUE, workers: int = 2) -> None:
        self.queue, self.workers = queue, workers

    def __enter__(self) -> Paused:
        publisher().control.cancel_consumer(self.queue, reply=True, timeout=5, limit=self.workers)
        return self

    def __exit__(self, *exc: object) -> None:
        self.started = time.monotonic()
        publisher().control.add_consumer(self.queue, reply=True, timeout=5, limit=self.workers)


# --- the measures ---------------------------------------------------------------------


def bench_noop(r: redis.Redis) -> float:
    r.delete(NOOP_COUNTER)
    app = publisher()
    with Paused() as paused, app.producer_or_acquire() as producer:
        for _ in range(N_NOOP):
            app.send_task(NOOP_TASK, producer=producer)
    wait_until(lambda: int(r.get(NOOP_COUNTER) or 0) >= N_NOOP)
    return N_NOOP / (time.monotonic() - paused.started)


def bench_single(sim: ProviderSim) -> float:
    since = len(sim.requests)
    with Paused() as paused:
        ids = [
            send_sms(f"2438{i:07d}{1 + i % 7}", f"single {i}", provider="keccel")
            for i in range(N_SINGLE)
        ]
    wait_sent(ids, sim, since)
    return N_SINGLE / (time.monotonic() - paused.started)


def bench_bulk(sim: ProviderSim) -> float:
    since = len(sim.requests)
    ids: list[str] = []
    with Paused(SEND_BULK_QUEUE) as paused:  # send_bulk's priority, bulk, has its own queue
        for r in range(N_BULK_REQUESTS):
            numbers = [f"38067{r:03d}{i:03d}{1 + i % 7}" for i in range(PER_REQUEST)]
            ids += send_bulk(numbers, f"bulk {r} {uuid.uuid4().hex[:6]}", provider="smsclub")
    wait_sent(ids, sim, since)
    return len(ids) / (time.monotonic() - paused.started)


def bench_latency(sim: ProviderSim) -> list[float]:
    latencies = []
    for i in range(N_LATENCY):
        time.sleep(0.25)
        before = len(sim.requests)
        send_sms(f"24385{i:06d}{1 + i % 7}", f"latency {i}", provider="keccel")
        returned = time.time()
        wait_until(lambda n=before: len(sim.requests) > n, timeout=10, every=0.001)
        latencies.append(sim.requests[before].at - returned)
    return sorted(latencies)


def restart_workers(stack: Stack, concurrency: int, env: dict[str, str]) -> None:
    """Every worker process again at `-c concurrency` with `env` added."""
    stack.env.update(env)
    for name in stack.worker_names:
        stack.kill(name, 15)
        command = stack.commands[name]
        command[command.index("-c") + 1] = str(concurrency)
        stack.restart(name)
    wait_until(lambda: len(publisher().control.ping(timeout=0.5)) >= stack.workers, 60, 0.2)


def bench_rate(stack: Stack, sim: ProviderSim) -> tuple[int, float, int]:
    """Two worker processes of one thread each share SMSClub's 9/s."""
    restart_workers(stack, 1, {"SMSQ_SMSCLUB_RATE_LIMIT": str(RATE)})
    started, since = time.time(), len(sim.requests)
    ids = [
        send_sms(f"38099{i:06d}{1 + i % 7}", f"rate {i} {uuid.uuid4().hex[:6]}", "smsclub")
        for i in range(N_RATE)
    ]
    wait_sent(ids, sim, since)
    times = sorted(r.at for r in list(sim.requests) if r.at >= started)
    whole = int(times[-1] - times[0])  # whole seconds of backlog from the first request
    per_second = sum(1 for t in times if t < times[0] + whole) / whole
    return max_in_window(times), per_second, len(times)


def bench_priorities(stack: Stack, sims: dict[str, ProviderSim]) -> list[priority.PriorityRun]:
    """Codes during a saturating campaign, SMSClub then Keccel at 9/s (bench/priority.py),
    through the two worker processes back at -c 4."""
    rates = {"SMSQ_KECCEL_RATE_LIMIT": str(priority.RATE)}
    restart_workers(stack, 4, {**rates, "SMSQ_SMSCLUB_RATE_LIMIT": str(priority.RATE)})
    return [
        priority.run("smsclub", sims["smsclub"], 20_000, "38099", "38067", wait_until),
        priority.run("keccel", sims["keccel"], 2_000, "24385", "24381", wait_until),
    ]


@dataclass
class LimitedRun:
    per_second: float  # recipients/s as the simulator received them
    worst: int  # the most requests in any 1 s


def settle(r: redis.Redis) -> None:
    """Until the bulk queue is empty and no message is queued or sending: what the
    runs before left (the priority runs' dropped campaigns) is out of the way."""
    keys = [SEND_BULK_QUEUE, *(f"{SEND_BULK_QUEUE}\x06\x16{n}" for n in range(1, 10))]

    def quiet() -> bool:
        if sum(int(r.llen(k)) for k in keys):
            return False
        with db.session() as s:
            where = Message.status.in_(("queued", "sending"))  # type: ignore[attr-defined]
            return not s.exec(select(func.count()).select_from(Message).where(where)).one()

    wait_until(quiet, 120, 0.2)


def bench_limited_bulk(r: redis.Redis, sim: ProviderSim) -> LimitedRun:
    """Bulk at SMSClub's documented limit, 9 requests/s x 100 numbers = 900 recipients/s
    an account, through the -c 4 workers bench_priorities left at 9/s. Timed by the
    simulator from the run's first request to its last: N requests span N - 1 gaps,
    so the last one's recipients are left out (a limiter holding 9/s exactly reads
    100 %)."""
    settle(r)
    since, tag = len(sim.requests), uuid.uuid4().hex[:6]
    ids: list[str] = []
    with Paused(SEND_BULK_QUEUE):
        for q in range(N_LIMITED_REQUESTS):
            numbers = [f"38068{q:03d}{i:03d}{1 + i % 7}" for i in range(PER_REQUEST)]
            ids += send_bulk(numbers, f"limited {q} {tag}", provider="smsclub")
    wait_sent(ids, sim, since)
    run = list(sim.requests[since:])
    sends = sorted(
        (q for q in run if q.path.endswith(SEND_PATHS["smsclub"]) and q.status < 400),
        key=lambda q: q.at,
    )
    span = sends[-1].at - sends[0].at
    return LimitedRun(
        per_second=sum(q.recipients for q in sends[:-1]) / span,
        worst=max_in_window([q.at for q in run]),
    )


# --- one store --------------------------------------------------------------------------


@dataclass
class StoreRun:
    noop: float
    single: float
    bulk: float
    producer: producer_path.ProducerRun
    latency: list[float]
    rss: dict[str, float]
    rate: tuple[int, float, int]  # max in any 1 s, requests/s, requests
    rss_rate: dict[str, float]
    priorities: list[priority.PriorityRun]
    limited: LimitedRun


def clear_smsq_env() -> None:
    for key in list(os.environ):
        if key.startswith("SMSQ_"):
            del os.environ[key]


@dataclass
class BenchStack:
    """A running bench stack and, on PostgreSQL, its embedded server."""

    stack: Stack
    pg: EmbeddedPostgres | None


@contextmanager
def bench_stack(
    store: str = "sqlite",
    env: dict[str, str] | None = None,
    *,
    web: bool = True,
    shared_buffers: str = "",
    prefix: str = "bench",
) -> Iterator[BenchStack]:
    """The benchmarks' stack (two worker processes `-c 4` of `bench.app`, beat, the
    simulators in this process) on `store`: SQLite in the stack's data directory, or a
    new database of an embedded PostgreSQL (tests/pg.py, with `shared_buffers` when
    given). The worker logs are printed if it does not start; everything is stopped
    afterwards and the SMSQ_* variables it set are cleared."""
    from tests.pg import start as start_postgres

    clear_smsq_env()
    pg = start_postgres() if store == "postgres" else None
    try:
        if pg is not None and shared_buffers:
            # The server's default (128 MB) is sized for a laptop; a store holding a
            # million messages gets a cache that holds its hot indexes (PostgreSQL's
            # own advice: about a quarter of the host's memory).
            pg.execute(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'")
            pg.down()
            pg.up()
        db_env = {"SMSQ_DATABASE_URL": pg.database(prefix)} if pg is not None else {}
        with tempfile.TemporaryDirectory(prefix=f"smsq-{prefix}-{store}-") as tmp:
            stack = Stack(
                data_dir=Path(tmp),
                delivery_seconds=1.0,
                workers=2,
                worker_concurrency=4,
                web=web,
                app="bench.app",
                extra_env={**BENCH_ENV, **(env or {}), **db_env},
            )
            os.environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
            try:
                try:
                    stack.start()
                except RuntimeError:
                    print(stack.log_tails())
                    raise
                yield BenchStack(stack, pg)
            finally:
                stack.stop()
                db.reset_engine()  # its pool's connections closed before the server stops
    finally:
        if pg is not None:
            pg.stop()
        clear_smsq_env()


def run_store(store: str) -> StoreRun:
    """The whole stack on `store`, every measure; ordered so the workers restart twice."""
    with bench_stack(store) as running:
        stack = running.stack
        assert stack.sandbox is not None
        sims = stack.sandbox.sandbox.sims
        r = redis.Redis.from_url(broker_url())
        print(f"[{store}] warming up ...", flush=True)
        wait_sent([send_sms("243851234561", "warm", provider="keccel")], timeout=30)
        print(f"[{store}] measuring ...", flush=True)
        noop = bench_noop(r)
        single = bench_single(sims["keccel"])
        bulk = bench_bulk(sims["smsclub"])
        producer = producer_path.run(stack.workers, stack.web_url, API_KEY)
        latency = bench_latency(sims["keccel"])
        rss = {name: stack.peak_rss_mb(name) for name in stack.worker_names}
        rate = bench_rate(stack, sims["smsclub"])
        rss_rate = {name: stack.peak_rss_mb(name) for name in stack.worker_names}
        by_priority = bench_priorities(stack, sims)
        limited = bench_limited_bulk(r, sims["smsclub"])  # the same workers, -c 4 at 9/s
    return StoreRun(
        noop, single, bulk, producer, latency, rss, rate, rss_rate, by_priority, limited
    )


# --- the table ----------------------------------------------------------------------------


def rows(run: StoreRun) -> list[Row]:
    """One store's rows: its result column, the ratio to its own no-op."""
    noop, latency = run.noop, run.latency
    p50 = statistics.median(latency) * 1000
    p99 = latency[min(len(latency) - 1, int(len(latency) * 0.99))] * 1000
    worst, per_second, requests = run.rate
    out: list[Row] = [
        ("bare Celery no-op (same queue, acks, prefetch)", f"{noop:8.0f} tasks/s", "", ""),
        (
            f"single sends, Keccel ({N_SINGLE})",
            f"{run.single:8.0f} msg/s",
            f"{run.single / noop:5.2f} x no-op",
            ">= 0.5 x",
        ),
        (
            f"bulk, SMSClub 100/request ({N_BULK_REQUESTS * 100})",
            f"{run.bulk:8.0f} recipients/s",
            f"{run.bulk / noop:5.2f} x no-op",
            ">= 5 x",
        ),
        *producer_path.rows(run.producer),
        (f"send_sms -> gateway at idle, p50 ({N_LATENCY})", f"{p50:8.1f} ms", "", "<= 20 ms"),
        (f"send_sms -> gateway at idle, p99 ({N_LATENCY})", f"{p99:8.1f} ms", "", ""),
        (
            f"rate limit {RATE}/s, 2 workers x 1 thread ({requests})",
            f"max {worst} in any 1 s",
            f"{per_second / RATE:5.1%} of R",
            f"<= {RATE}; >= 95%",
        ),
        *limited_rows(run.limited),
        (
            "peak RSS per worker process (-c 4)",
            " / ".join(f"{v:.0f}" for v in run.rss.values()) + " MB",
            "",
            "<= 150 MB",
        ),
        (
            "peak RSS per worker process (after -c 1 run)",
            " / ".join(f"{v:.0f}" for v in run.rss_rate.values()) + " MB",
            "",
            "",
        ),
    ]
    for result in run.priorities:
        out.extend(priority.rows(result))
    return out


def limited_rows(run: LimitedRun) -> list[Row]:
    ceiling = RATE * PER_REQUEST
    head = f"bulk, SMSClub limited to {RATE}/s ({N_LIMITED_REQUESTS * PER_REQUEST})"
    return [
        (
            head,
            f"{run.per_second:8.0f} recipients/s",
            f"{run.per_second / ceiling:5.1%} of {ceiling}",
            f">= 95%; <= {RATE} req/s",
        ),
        (f"{head}: requests", f"max {run.worst} in any 1 s", "", ""),
    ]


def print_table(results: dict[str, list[Row]], load: float) -> None:
    """One table: a result column (and its ratio) per store, the target last."""
    stores = list(results)
    table = list(zip(*results.values(), strict=True))  # each row, one per store
    names = [" / ".join(dict.fromkeys(r[0] for r in row)) for row in table]
    width = max(len(n) for n in names)
    print(f"\nsmsq benchmark: {os.cpu_count()} CPUs, load average {load:.2f} at start")
    print(
        f"{'measure':<{width}}" + "".join(f"  {s:>24}  {'ratio':>14}" for s in stores) + "  target"
    )
    print("-" * (width + 42 * len(stores) + 20))
    for name, row in zip(names, table, strict=True):
        cells = "".join(f"  {value:>24}  {ratio:>14}" for _n, value, ratio, _t in row)
        print(f"{name:<{width}}{cells}  {row[0][3]}")


def main(argv: list[str] | None = None) -> int:
    from tests.pg import available as postgres_available

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", choices=[*STORES, "both"], default="both" if postgres_available() else "sqlite"
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    stores = list(STORES) if args.store == "both" else [args.store]
    results = {store: rows(run_store(store)) for store in stores}
    print_table(results, load)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
