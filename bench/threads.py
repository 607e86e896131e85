"""What a thread of its own costs a single send: `send_messages` in this process,
from 1 thread and from several at once, no Celery around it.

A worker runs its sends on threads (`-c 4` in the benchmark). Every store statement,
Redis command and HTTP request lets go of the GIL and takes it back; with other
threads runnable, each of those is a hand-over between threads, which costs CPU
of its own. This measures it: the embedded Redis, the sandbox (in this process, on
its own thread), SQLite in a temporary directory or a database of an embedded
PostgreSQL (tests/pg.py); N single Keccel messages queued by `send_sms` (no worker
consumes them), then sent by calling `send_messages` from T threads, each its
share, `--batch` ids per call (1: one task's work per message; more: what a task
claiming several singles of one gateway would do). Printed per T: the sending
threads' CPU per message (`time.thread_time`), the whole process's (the
simulator's share included), messages/s.

    .venv/bin/python bench/threads.py [--threads 1 4] [--messages 1600] [--batch 1]
                                      [--store sqlite|postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from producer import send_sms
from producer.embedded_redis import ensure_embedded_redis, stop_embedded_redis
from worker.gateways.sandbox.server import start_in_thread
from worker.ops.stack import reset_process_state, sandbox_env

WARM = 200  # sent first, untimed: imports, compiled statements, connections


def start(data_dir: Path) -> None:
    """Redis, the sandbox and the settings of a worker, in this process."""
    broker = ensure_embedded_redis(data_dir)
    sandbox = start_in_thread(delivery_seconds=3600)  # no reports during the runs
    os.environ.update(
        {
            "SMSQ_DATA_DIR": str(data_dir),
            "SMSQ_BROKER_URL": broker,
            "SMSQ_RECIPIENT_LIMIT": "off",
            **sandbox_env(sandbox.url),
        }
    )
    reset_process_state()


def run(threads: int, messages: int, batch: int = 1) -> tuple[float, float, float]:
    """(sending threads' CPU ms/msg, process CPU ms/msg, msg/s) for `threads` threads."""
    from worker.sending.send import send_messages

    ids = [
        send_sms(f"2438{i:07d}{1 + i % 7}", f"threads {threads} {i}", provider="keccel")
        for i in range(WARM + messages)
    ]

    def requeue(*_args: object) -> None:
        raise AssertionError("a send was queued again: the run would not compare")

    for message_id in ids[:WARM]:
        send_messages([message_id], requeue)
    shares = [ids[WARM + t :: threads] for t in range(threads)]
    cpu = [0.0] * threads

    def send(t: int) -> None:
        share, started = shares[t], time.thread_time()
        for start in range(0, len(share), batch):
            send_messages(share[start : start + batch], requeue)
        cpu[t] = time.thread_time() - started

    workers = [threading.Thread(target=send, args=(t,)) for t in range(threads)]
    process, wall = time.process_time(), time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    process, wall = time.process_time() - process, time.perf_counter() - wall
    return sum(cpu) * 1000 / messages, process * 1000 / messages, messages / wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--messages", type=int, default=1600)
    parser.add_argument("--batch", type=int, default=1, help="ids per send_messages call")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args(argv)
    if args.messages < max(args.threads):
        parser.error("--messages: at least one per thread")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="smsq-threads-") as tmp, contextlib.ExitStack() as up:
        if args.store == "postgres":
            from tests.pg import start as start_postgres

            pg = start_postgres()
            up.callback(pg.stop)
            os.environ["SMSQ_DATABASE_URL"] = pg.database("threads")
        up.callback(stop_embedded_redis, tmp)
        start(Path(tmp))
        from producer import db

        up.callback(db.reset_engine)  # its connections closed before the server stops
        report(args.threads, args.messages, args.batch, load)
    return 0


def report(thread_counts: list[int], messages: int, batch: int, load: float) -> None:
    from producer import db

    print(
        f"smsq threads: {os.cpu_count()} CPUs, load average {load:.2f} at start; "
        f"{db.get_engine().dialect.name} store; {messages} single Keccel sends per run, "
        f"{batch} per send_messages call"
    )
    for threads in thread_counts:
        thread_ms, process_ms, rate = run(threads, messages, batch)
        print(
            f"{threads} thread(s): sending threads' CPU {thread_ms:.2f} ms/msg, "
            f"process CPU {process_ms:.2f} ms/msg (the simulator's included), {rate:.0f} msg/s"
        )


if __name__ == "__main__":
    raise SystemExit(main())
