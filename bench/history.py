"""`make bench`, second part: the same stack with an empty store and with a long history.

For each store (SQLite, then the embedded PostgreSQL of tests/pg.py): the stack
of bench/run.py (embedded Redis, two worker processes `-c 4`, beat, web, the
simulators) with two stores of that kind: an empty one, and one holding ROWS final
messages and their events (three each), written straight into it (`executemany`
on SQLite, `COPY` on PostgreSQL; then `VACUUM ANALYZE` there, as autovacuum
would). The history spans 120 days: the oldest quarter is already redacted, as
SMSQ_RETENTION_DAYS=90 would have left it. The send runs take the two stores in
turn (every process restarted on the other store, and warmed up, between runs),
so a minute in which the machine is slower slows both columns, not one.

Measured on each store: single and bulk throughput (the best of TRIES runs, each
timed from a filled, paused queue until every message is `sent`), beat's tick
(`sweeps.tick` called here, and the tick task's own time in the workers' logs),
`GET /metrics`, `get_status`, `smsq status`; with the history, a retention batch.
And per message, for the single and the bulk runs of the empty store: Redis
commands, store round trips, CPU (bench/costs.py).

    .venv/bin/python bench/history.py [--rows N] [--store sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import redis

from bench.costs import Costs, ProducerCounter, per_message, snapshot
from bench.run import Paused, bench_stack, wait_sent
from producer import db, get_status, send_bulk, send_sms
from producer.models import new_id
from producer.queues import SEND_BULK_QUEUE, SEND_QUEUE, broker_url
from producer.settings import reload_settings
from worker.ops.stack import Stack
from worker.store.retention import mask_number, redact_batch

ROWS = 1_000_000
EVENTS_PER_MESSAGE = 3
HISTORY_DAYS = 120
REDACTED_AFTER_DAYS = 90
CHUNK = 20_000
N_SINGLE = 2000  # as bench/run.py
N_BULK_REQUESTS = 200  # x 100 recipients: 20,000, as bench/run.py, so start-up does not dominate
TRIES = 3
SAMPLES = 50
PG_SHARED_BUFFERS = ""  # e.g. "1GB": no change seen in single sends (see README)
# Final statuses of the history, per 100 messages.
FATES = ["delivered"] * 90 + ["undelivered"] * 4 + ["rejected"] * 3 + ["expired"] + ["failed"] * 2

MESSAGE_COLUMNS = [
    *("id", "owner", '"to"', "text", "sender", "provider", "fallbacks", "encoding"),
    *("segments", "flash", "status", "error", "attempts", "provider_message_id"),
    *("created_at", "updated_at", "claimed_at", "claimed_by", "sent_at", "poll_count"),
    *("poll_failures", "priority", "redacted_at"),
]
EVENT_COLUMNS = [
    *("message_id", "provider", "provider_message_id", "source", "kind", "old_status"),
    *("new_status", "applied", "note", "raw", "created_at"),
]


# --- the history, written straight into the store -------------------------------


def history_rows(start: int, stop: int, rows: int, now: datetime) -> Iterator[tuple[tuple, list]]:
    """(message, its events) for messages start..stop of `rows`, oldest first."""
    for i in range(start, stop):
        age = timedelta(days=HISTORY_DAYS * (rows - i) / rows)
        created = now - age
        fate = FATES[i % 100]
        provider = "smsclub" if i % 3 == 0 else "keccel"
        number = f"2438{i % 100_000_000:08d}"
        pid = f"h{i}"
        redacted = age > timedelta(days=REDACTED_AFTER_DAYS)
        claimed, sent, final = (created + timedelta(seconds=s) for s in (0.1, 0.5, 30))
        message = (
            new_id(created),  # as the producer makes it: ordered by creation time
            "",
            mask_number(number) if redacted else number,
            "" if redacted else f"history message {i}: your code is {i % 10_000:04d}",
            "SMSQ",
            provider,
            "",
            "gsm7",
            1,
            False,
            fate,
            "rejected: invalid number" if fate == "rejected" else None,
            1,
            pid,
            created,
            final,
            claimed,
            "w1@bench",
            None if fate == "rejected" else sent,
            1,
            0,
            "bulk" if provider == "smsclub" else "normal",
            final if redacted else None,
        )
        answer = None if redacted else json.dumps({"id": pid, "to": number, "status": "ACCEPTED"})
        report = None if redacted else json.dumps({"id": pid, "status": fate.upper()})
        events = [
            (
                provider,
                pid,
                "worker",
                "status",
                "queued",
                "sending",
                True,
                "claimed",
                None,
                claimed,
            ),
            (provider, pid, "worker", "status", "sending", "sent", True, None, answer, sent),
            (provider, pid, "poll", "status", "sent", fate, True, None, report, final),
        ][:EVENTS_PER_MESSAGE]
        yield message, events


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    return value


def load_history(rows: int) -> list[str]:
    """Write `rows` final messages and their events; a sample of their ids."""
    engine = db.get_engine()
    now = datetime.now(UTC) - timedelta(minutes=5)
    sample: list[str] = []
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for start in range(0, rows, CHUNK):
            chunk = list(history_rows(start, min(rows, start + CHUNK), rows, now))
            sample += [m[0] for m, _e in chunk[:: max(1, CHUNK // 50)]]
            messages = [m for m, _e in chunk]
            events = [(m[0], *e) for m, es in chunk for e in es]
            if engine.dialect.name == "sqlite":
                _sqlite_insert(cursor, "messages", MESSAGE_COLUMNS, messages)
                _sqlite_insert(cursor, "message_events", EVENT_COLUMNS, events)
            else:
                _copy(cursor, "messages", MESSAGE_COLUMNS, messages)
                _copy(cursor, "message_events", EVENT_COLUMNS, events)
            raw.commit()
    finally:
        raw.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":  # as autovacuum would, soon
            conn.exec_driver_sql("VACUUM ANALYZE messages")
            conn.exec_driver_sql("VACUUM ANALYZE message_events")
        else:  # the load's write-ahead log folded into the file, as the writers of a
            # store that grew over months would have done by checkpoints on the way
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return sample


def _sqlite_insert(cursor: Any, table: str, columns: list[str], rows: list[tuple]) -> None:
    marks = ", ".join("?" for _ in columns)
    cursor.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
        [tuple(_sqlite_value(v) for v in row) for row in rows],
    )


def _copy(cursor: Any, table: str, columns: list[str], rows: list[tuple]) -> None:
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def skip_rollup() -> None:
    """The dashboard's roll-up (worker.ui.rollup) adds new events to its summary a
    little at a time; a store whose history grew over months has them rolled up
    long ago. The loaded events are marked as rolled up, so the workers measured
    next do not spend the run catching up with three million events at once."""
    from sqlmodel import func, select

    from producer.models import MessageEvent, UiRollup
    from worker.ui.rollup import NAME

    with db.session() as s:
        newest = int(s.exec(select(func.max(MessageEvent.id))).one() or 0)
        state = s.get(UiRollup, NAME)
        if state is None:
            s.add(UiRollup(name=NAME, last_event_id=newest, events=0))
        else:
            state.last_event_id = max(int(state.last_event_id), newest)
            s.add(state)
        s.commit()


def active_rows() -> int:
    from sqlmodel import func, select

    from producer.models import ACTIVE, Message, status_is

    with db.session() as s:
        return int(
            s.exec(select(func.count()).select_from(Message).where(status_is(*ACTIVE))).one()
        )


def store_size_mb(stack: Stack) -> float:
    engine = db.get_engine()
    if engine.dialect.name == "sqlite":
        path = Path(engine.url.database or "")
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6
    with engine.connect() as conn:
        return (
            float(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar())
            / 1e6
        )


# --- measurements -------------------------------------------------------------------


@dataclass
class Phase:
    single: float = 0.0
    bulk: float = 0.0
    single_costs: Costs | None = None
    bulk_costs: Costs | None = None
    tick: list[float] = field(default_factory=list)
    worker_tick: list[float] = field(default_factory=list)
    metrics: list[float] = field(default_factory=list)
    status: list[float] = field(default_factory=list)
    cli: list[float] = field(default_factory=list)
    command: float = 0.0
    retention: list[float] = field(default_factory=list)
    size_mb: float = 0.0
    active: int = 0  # messages not final when the reads were timed (the runs' own `sent`)


@dataclass
class Bench:
    stack: Stack
    r: redis.Redis
    counter: ProducerCounter
    postmaster: int | None
    producer_cpu: float = 0.0
    runs: int = 0

    def snap(self, closing: bool = False) -> Any:
        return snapshot(
            self.stack, self.r, self.counter, self.producer_cpu, self.postmaster, closing
        )

    def timed(
        self, enqueue: Callable[[], list[str]], queue: str = SEND_QUEUE
    ) -> tuple[float, Costs]:
        """Fill the paused queue, resume, wait until all are sent: msg/s and costs."""
        with Paused(queue) as paused:
            before = self.snap()
            self.counter.on = True
            cpu = time.thread_time()
            ids = enqueue()
            self.producer_cpu += time.thread_time() - cpu
            self.counter.on = False
        wait_sent(ids, timeout=600)
        rate = len(ids) / (time.monotonic() - paused.started)
        return rate, per_message(before, self.snap(closing=True), len(ids))

    def single(self) -> tuple[float, Costs]:
        self.runs += 1
        run = self.runs

        def enqueue() -> list[str]:
            return [
                send_sms(f"2438{i:07d}{1 + i % 7}", f"single {run} {i}", provider="keccel")
                for i in range(N_SINGLE)
            ]

        return self.timed(enqueue)

    def bulk(self) -> tuple[float, Costs]:
        self.runs += 1
        run = self.runs

        def enqueue() -> list[str]:
            ids: list[str] = []
            for q in range(N_BULK_REQUESTS):
                numbers = [f"38067{q:03d}{i:03d}{1 + i % 7}" for i in range(100)]
                ids += send_bulk(numbers, f"bulk {run} {q}", provider="smsclub")
            return ids

        return self.timed(enqueue, SEND_BULK_QUEUE)


def timings(call: Callable[[], object], n: int = SAMPLES) -> list[float]:
    """ms per call, n calls after one untimed (statements compiled, caches warm)."""
    call()
    out = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def worker_ticks(stack: Stack, since: dict[str, int]) -> list[float]:
    """The tick task's run times (ms) the workers logged after the offsets `since`."""
    found = []
    pattern = re.compile(r"Task smsq\.tick\[[^\]]+\] succeeded in ([0-9.]+)s")
    for name in stack.worker_names:
        log = stack.data_dir / "logs" / f"{name}.log"
        with open(log, "rb") as f:
            f.seek(since.get(name, 0))
            text = f.read().decode(errors="replace")
        found += [float(m.group(1)) * 1000 for m in pattern.finditer(text)]
    return found


def log_offsets(stack: Stack) -> dict[str, int]:
    return {n: (stack.data_dir / "logs" / f"{n}.log").stat().st_size for n in stack.worker_names}


def send_runs(bench: Bench, phase: Phase) -> None:
    """One single and one bulk run on the store the stack is on; the best kept in
    `phase`, with the tick task's times in the workers meanwhile."""
    assert bench.stack.sandbox is not None
    for sim in bench.stack.sandbox.sandbox.sims.values():  # an account that never runs dry:
        sim.update_account({"balance": 1e9})  # twelve runs of 20,000 outspend its 100,000
    offsets = log_offsets(bench.stack)
    rate, costs = bench.single()
    if rate > phase.single:
        phase.single, phase.single_costs = rate, costs
    rate, costs = bench.bulk()
    if rate > phase.bulk:
        phase.bulk, phase.bulk_costs = rate, costs
    phase.worker_tick += worker_ticks(bench.stack, offsets)


def use_store(stack: Stack, url: str) -> None:
    """This process and every process of the stack on the store at `url` (the workers,
    beat and web restarted with it)."""
    os.environ["SMSQ_DATABASE_URL"] = stack.env["SMSQ_DATABASE_URL"] = url
    reload_settings()
    db.reset_engine()
    db.get_engine()  # the schema up to date before the processes start
    for name in [*stack.worker_names, *stack.beat_names, "web"]:
        stack.kill(name, signal.SIGTERM)
        stack.restart(name)
    stack.wait_ready()
    warm_up()


def warm_up() -> None:
    """A few sends of each kind, untimed: the new worker processes import the send
    path and compile its statements before a timed run."""
    ids = [send_sms(f"24385{i:06d}1", f"warm {i}", provider="keccel") for i in range(16)]
    for q in range(4):
        numbers = [f"38068{q:03d}{i:03d}1" for i in range(20)]
        ids += send_bulk(numbers, f"warm {q}", provider="smsclub")
    wait_sent(ids, timeout=60)


def in_turn(bench: Bench, stores: dict[str, Phase]) -> None:
    """The send runs on the stores {url: phase} in turn, TRIES rounds: a machine that is
    slower for a minute slows both stores' runs, not one store's."""
    for _ in range(TRIES):
        for url, phase in stores.items():
            use_store(bench.stack, url)
            send_runs(bench, phase)


def measure(bench: Bench, ids: list[str], phase: Phase, history: bool) -> None:
    """The reads and the tick, timed on the store the stack is on, after its send runs
    (their messages stay `sent`: the active rows the scrape and the tick look at)."""
    from worker.ops import cli
    from worker.resilience import sweeps

    stack = bench.stack
    phase.active = active_rows()
    phase.tick = timings(lambda: sweeps.tick(lambda _i: None, lambda _p, _i: None, lambda _i: None))
    with httpx.Client(timeout=30) as http:
        http.get(f"{stack.web_url}/metrics").raise_for_status()
        phase.metrics = timings(lambda: http.get(f"{stack.web_url}/metrics").raise_for_status())
    phase.status = timings(lambda: get_status(random.choice(ids)), 200)

    def cli_status() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            cli.main(["status", random.choice(ids), "--json"])

    phase.cli = timings(cli_status)
    started = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).with_name("smsq")), "status", random.choice(ids)],
        check=True,
        stdout=subprocess.DEVNULL,
        env=os.environ,
    )
    phase.command = time.perf_counter() - started
    if history:  # rows between 30 and 90 days old are due for a 30-day retention
        before = datetime.now(UTC) - timedelta(days=30)
        phase.retention = timings(lambda: redact_batch(before), 10)
    phase.size_mb = store_size_mb(stack)


# --- one store ------------------------------------------------------------------------


@dataclass
class StoreResult:
    store: str
    rows: int
    load_seconds: float
    empty: Phase
    full: Phase


def run_store(store: str, rows: int, shared_buffers: str = "") -> StoreResult:
    env = {"SMSQ_RETENTION_DAYS": "90"}
    try:
        with bench_stack(store, env, shared_buffers=shared_buffers, prefix="history") as running:
            stack, pg = running.stack, running.pg
            postmaster = pg.server.get_postmaster_info().pid if pg is not None else None
            bench = Bench(stack, redis.Redis.from_url(broker_url()), ProducerCounter(), postmaster)
            print(f"[{store}] warming up ...", flush=True)
            warm = [send_sms("243851234561", "warm", provider="keccel")]
            wait_sent(warm, timeout=30)
            empty_url, empty, full = db.database_url(), Phase(), Phase()
            full_url = (
                pg.database("history_full")
                if pg is not None
                else f"sqlite:///{stack.data_dir / 'history.db'}"
            )
            print(f"[{store}] loading {rows:,} final messages into a second store ...", flush=True)
            use_store(stack, full_url)
            started = time.monotonic()
            sample = load_history(rows)
            load_seconds = time.monotonic() - started
            skip_rollup()
            print(f"[{store}] loaded in {load_seconds:.0f} s; send runs on both in turn ...")
            in_turn(bench, {full_url: full, empty_url: empty})  # ends on the empty store
            print(f"[{store}] reads, empty store, then with history ...", flush=True)
            measure(bench, warm, empty, history=False)
            use_store(stack, full_url)
            measure(bench, sample, full, history=True)
        return StoreResult(store, rows, load_seconds, empty, full)
    finally:
        reload_settings()


# --- the table ------------------------------------------------------------------------


def _ms(values: list[float]) -> str:
    """Median / 99th percentile."""
    if not values:
        return "-"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{statistics.median(values):.1f} / {p99:.1f} ms"


def _change(empty: float, full: float) -> str:
    return f"{(full - empty) / empty:+.0%}" if empty else ""


def table(result: StoreResult) -> list[tuple[str, str, str, str, str]]:
    e, f = result.empty, result.full
    n = f"{result.rows:,}"
    return [
        (
            f"single sends, Keccel ({N_SINGLE}), best of {TRIES}",
            f"{e.single:.0f} msg/s",
            f"{f.single:.0f} msg/s",
            _change(e.single, f.single),
            "within 10 %",
        ),
        (
            f"bulk, SMSClub 100/request ({N_BULK_REQUESTS * 100}), best of {TRIES}",
            f"{e.bulk:.0f} rcpt/s",
            f"{f.bulk:.0f} rcpt/s",
            _change(e.bulk, f.bulk),
            "within 10 %",
        ),
        ("beat's tick (sweeps.tick), p50 / p99", _ms(e.tick), _ms(f.tick), "", "<= 50 ms"),
        (
            "  the tick task in the workers, during the send runs",
            _ms(e.worker_tick),
            _ms(f.worker_tick),
            "",
            "",
        ),
        ("GET /metrics, p50 / p99", _ms(e.metrics), _ms(f.metrics), "", "<= 100 ms"),
        (
            "  messages not final meanwhile (the runs' own, `sent`)",
            f"{e.active:,}",
            f"{f.active:,}",
            "",
            "",
        ),
        ("get_status, p50 / p99 (200)", _ms(e.status), _ms(f.status), "", "<= 5 ms"),
        ("smsq status --json, in process", _ms(e.cli), _ms(f.cli), "", "instant"),
        (
            "smsq status, the command (Python start included)",
            f"{e.command:.2f} s",
            f"{f.command:.2f} s",
            "",
            "",
        ),
        ("retention: one batch of 500 rows, p50 / p99", "", _ms(f.retention), "", "short"),
        (
            f"store size ({n} rows loaded in {result.load_seconds:.0f} s)",
            f"{e.size_mb:.0f} MB",
            f"{f.size_mb:.0f} MB",
            "",
            "",
        ),
    ]


def cost_table(result: StoreResult) -> list[tuple[str, ...]]:
    phases = (result.empty.single_costs, result.full.single_costs)
    phases += (result.empty.bulk_costs, result.full.bulk_costs)
    cells = [c.cells() for c in phases if c is not None]
    assert len(cells) == 4
    return [(rows[0][0], *(r[1] for r in rows)) for rows in zip(*cells, strict=True)]


def print_tables(results: list[StoreResult], load: float) -> None:
    print(f"\nsmsq history benchmark: {os.cpu_count()} CPUs, load average {load:.2f} at start")
    for result in results:
        rows = table(result)
        width = max(len(r[0]) for r in rows)
        print(
            f"\n[{result.store}] {result.rows:,} final messages, {EVENTS_PER_MESSAGE} events each"
        )
        head = f"{'empty store':>22}  {'with history':>22}  {'change':>7}"
        print(f"{'measure':<{width}}  {head}  target")
        print("-" * (width + 70))
        for name, empty, full, change, target in rows:
            print(f"{name:<{width}}  {empty:>22}  {full:>22}  {change:>7}  {target}")
    for result in results:
        rows = cost_table(result)
        width = max(len(r[0]) for r in rows)
        print(f"\n[{result.store}] per message sent (until `sent`, no status polls)")
        heads = ("single, empty", "single, history", "bulk, empty", "bulk, history")
        print(f"{'measure':<{width}}  " + "  ".join(f"{h:>15}" for h in heads))
        print("-" * (width + 70))
        for name, *values in rows:
            print(f"{name:<{width}}  " + "  ".join(f"{v:>15}" for v in values))
        for label, costs in (
            ("single", result.empty.single_costs),
            ("bulk", result.empty.bulk_costs),
        ):
            assert costs is not None
            top = ", ".join(f"{name} {n:.2f}" for name, n in costs.redis_top[:8])
            print(f"  Redis commands / msg, {label}, empty store: {top}")


def main(argv: list[str] | None = None) -> int:
    from tests.pg import available as postgres_available

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument(
        "--pg-shared-buffers",
        default=PG_SHARED_BUFFERS,
        help="PostgreSQL's shared_buffers for the run ('' keeps the server's default)",
    )
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgres", "both"],
        default="both" if postgres_available() else "sqlite",
    )
    args = parser.parse_args(argv)
    if args.rows < 1000:
        parser.error("--rows: at least 1000")
    load = os.getloadavg()[0]
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    results = []
    for store in stores:
        results.append(run_store(store, args.rows, args.pg_shared_buffers))
    print_tables(results, load)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
