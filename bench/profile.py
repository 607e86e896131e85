"""`make profile`: where the worker processes spend their time, by py-spy.

The stack of bench/run.py (embedded Redis, SQLite or an embedded PostgreSQL with
`--store postgres`, two worker processes `-c 4`,
beat, the simulators in this process). For each run (single Keccel sends; SMSClub
bulk, 100 numbers a request) the queue is filled while the workers are paused,
then py-spy records every worker process (`py-spy record --format raw
--nonblocking`, RATE samples a second) from the moment they resume until the last
message is `sent`, in two views at once: threads not idle (running, or runnable and
waiting for a CPU: a round trip to Redis or the store shows here) and threads
holding the GIL (the CPU spent in Python). Printed per run and view: the samples by
package of the innermost frame, and the top functions by own samples (the frame
running) and by total samples (the frame anywhere on the stack); and the workers'
CPU time per message (psutil).

    .venv/bin/python bench/profile.py [--store sqlite|postgres] [--single N] [--bulk REQUESTS]
        [--rate HZ] [--idle]

py-spy reads another process's memory: it needs root, or ptrace allowed
(`kernel.yama.ptrace_scope=0`), or CAP_SYS_PTRACE.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import Paused, bench_stack, wait_sent
from producer import send_bulk, send_sms
from producer.queues import SEND_BULK_QUEUE
from worker.ops.stack import Stack

RATE = 200
STORE_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL (embedded)"}
TOP = 12
PACKAGES = 8
# Frames every thread has at its bottom: they say nothing of where the time goes.
PLUMBING = ("threading.py", "concurrent/futures/thread.py", "<frozen runpy>", "runpy.py")
# ...and in the totals, the frames of Celery's own machinery around every task (the
# same share as `send (worker/tasks.py)`) and of the worker's start.
WRAPPERS = ("(celery/", "(click/", "(billiard/")


# The two views recorded at once (two py-spy processes per worker, neither pausing it):
# threads not idle (running, or runnable and waiting for a CPU: round trips show here),
# and threads holding the GIL (the CPU spent in Python code; a C call that releases
# the GIL, such as sqlite3 running a statement, leaves it).
VIEWS = {"not idle": [], "holding the GIL": ["--gil"]}


@dataclass
class Profile:
    name: str
    view: str
    messages: int
    seconds: float
    stacks: Counter[tuple[str, ...]]
    cpu_seconds: float  # user + system of the worker processes over the run (psutil)

    @property
    def samples(self) -> int:
        return sum(self.stacks.values())


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("smsq: error: py-spy is not installed (the dev extra has it)")
    return found


def record(
    stack: Stack,
    out_dir: Path,
    name: str,
    rate: int,
    views: dict[str, list[str]],
    run: Callable[[], tuple[int, float]],
) -> list[Profile]:
    """Record every worker process in every view while `run` works; `run` returns the
    message count and the seconds from the workers' resuming to the last `sent`."""
    recorders = []
    for view, options in views.items():
        for worker in stack.worker_names:
            output = out_dir / f"{name}-{worker}-{len(recorders)}.txt"
            command = [py_spy(), "record", "--pid", str(stack.processes[worker].pid)]
            command += ["--rate", str(rate), "--format", "raw", "--nolineno", "--nonblocking"]
            command += ["--output", str(output), *options]
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            recorders.append((view, output, proc))
    time.sleep(1.0)  # py-spy attached before the queue is released
    cpu = worker_cpu(stack)
    messages, seconds = run()
    cpu = worker_cpu(stack) - cpu
    stacks: dict[str, Counter[tuple[str, ...]]] = {view: Counter() for view in views}
    for view, output, proc in recorders:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        _out, err = proc.communicate(timeout=60)
        if not output.exists():
            raise SystemExit(f"smsq: error: py-spy wrote nothing: {err.decode(errors='replace')}")
        stacks[view].update(parse_raw(output.read_text()))
    return [Profile(name, view, messages, seconds, stacks[view], cpu) for view in views]


def worker_cpu(stack: Stack) -> float:
    import psutil

    total = 0.0
    for name in stack.worker_names:
        for pid in stack.pids(name):
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


def parse_raw(text: str) -> Counter[tuple[str, ...]]:
    """py-spy's raw (collapsed) format: `outer;...;inner count` per line."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        frames, _sep, count = line.rpartition(" ")
        stacks[tuple(f for f in frames.split(";") if f)] += int(count)
    return stacks


def package(frame: str) -> str:
    """`execute (sqlalchemy/engine/base.py)` -> `sqlalchemy`; smsq's own by subpackage;
    code without a file (`<sqlalchemy generated ...>`) by its first word."""
    path = frame.rsplit(" (", 1)[-1].removesuffix(")")
    if path.startswith("<"):
        return path.split()[0] + ">"
    parts = path.split("/")
    if parts[0] in ("worker", "producer", "bench") and len(parts) > 2:
        return "/".join(parts[:2])
    if len(parts) == 1:
        return "stdlib " + parts[0].removesuffix(".py")
    return parts[0]


def useful(frame: str) -> bool:
    return not any(p in frame for p in PLUMBING)


def own_and_total(profile: Profile) -> tuple[Counter[str], Counter[str]]:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for frames, count in profile.stacks.items():
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            if useful(frame) and not any(w in frame for w in WRAPPERS):
                total[frame] += count
    return own, total


def report(profile: Profile, rate: int) -> list[str]:
    own, total = own_and_total(profile)
    n = profile.samples or 1
    per_msg = profile.samples / rate * 1000 / max(1, profile.messages)
    lines = [
        f"-- {profile.view}: {profile.samples} samples ({per_msg:.2f} thread-ms/msg)",
        "by package (innermost frame): "
        + ", ".join(
            f"{name} {count / n:.0%}" for name, count in packages(own).most_common(PACKAGES)
        ),
        f"top {TOP} functions by own samples:",
    ]
    lines += [f"  {count / n:6.1%}  {frame}" for frame, count in own.most_common(TOP)]
    lines.append(f"top {TOP} functions by total samples (anywhere on the stack):")
    lines += [f"  {count / n:6.1%}  {frame}" for frame, count in total.most_common(TOP)]
    return lines


def packages(own: Counter[str]) -> Counter[str]:
    by_package: Counter[str] = Counter()
    for frame, count in own.items():
        by_package[package(frame)] += count
    return by_package


def heading(profile: Profile) -> str:
    cpu = profile.cpu_seconds * 1000 / max(1, profile.messages)
    return (
        f"== {profile.name}: {profile.messages} messages in {profile.seconds:.1f} s "
        f"({profile.messages / profile.seconds:.0f}/s); worker CPU {cpu:.2f} ms/msg (psutil)"
    )


def single_run(n: int) -> Callable[[], tuple[int, float]]:
    def run() -> tuple[int, float]:
        tag = uuid.uuid4().hex[:6]
        with Paused() as paused:
            ids = [
                send_sms(f"2438{i:07d}{1 + i % 7}", f"profile {tag} {i}", provider="keccel")
                for i in range(n)
            ]
        wait_sent(ids, timeout=600)
        return n, time.monotonic() - paused.started

    return run


def bulk_run(requests: int) -> Callable[[], tuple[int, float]]:
    def run() -> tuple[int, float]:
        tag = uuid.uuid4().hex[:6]
        ids: list[str] = []
        with Paused(SEND_BULK_QUEUE) as paused:
            for q in range(requests):
                numbers = [f"38067{q:03d}{i:03d}{1 + i % 7}" for i in range(100)]
                ids += send_bulk(numbers, f"profile {tag} {q}", provider="smsclub")
        wait_sent(ids, timeout=600)
        return len(ids), time.monotonic() - paused.started

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=2000, help="single Keccel sends")
    parser.add_argument("--bulk", type=int, default=100, help="SMSClub requests of 100")
    parser.add_argument("--rate", type=int, default=RATE, help="samples per second")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--idle", action="store_true", help="a third view: every thread, idle ones too (wall time)"
    )
    args = parser.parse_args(argv)
    py_spy()
    load = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="smsq-profile-") as out_dir,
        bench_stack(args.store, web=False, prefix="profile") as running,
    ):
        stack, out = running.stack, Path(out_dir)
        warm = [send_sms("243851234561", "warm", provider="keccel")]
        wait_sent(warm, timeout=30)
        print("profiling single sends ...", flush=True)
        views = {**VIEWS, **({"every thread": ["--idle"]} if args.idle else {})}
        single = record(stack, out, "single", args.rate, views, single_run(args.single))
        print("profiling bulk sends ...", flush=True)
        bulk = record(stack, out, "bulk", args.rate, views, bulk_run(args.bulk))
    print(
        f"\nsmsq profile: {os.cpu_count()} CPUs, load average {load:.2f} at start; "
        f"{STORE_NAMES[args.store]} store; "
        f"py-spy at {args.rate} Hz on both worker processes (-c 4 each), views: " + ", ".join(views)
    )
    for run in (single, bulk):
        print("\n" + heading(run[0]))
        for profile in run:
            print("\n".join(report(profile, args.rate)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
