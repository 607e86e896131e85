"""`make faults`: the fault suite, one embedded stack, one batch per fault, one table.

    .venv/bin/python bench/faults.py [--messages N]

One stack (embedded Redis with AOF, two worker processes, one beat, web, the
gateway simulators in this process with a short delivery time, a global rate
limit on every provider used) takes one batch of N single sends per fault,
each message with its own text so the simulator's book can be matched:

1. kill -9 of a worker while its sends hang in the gateway (KING SMS PRO, which
   has a lookup for `SMSQ_UNCERTAIN_SEND=reconcile`), then restart it;
2. Redis stopped (SHUTDOWN, AOF) mid-run for REDIS_DOWN_SECONDS and started
   again; workers reconnect and beat rides the outage out
   (`worker.beat.SmsqScheduler`); `Stack.revive` is only a safety net, restarting
   any process that exited anyway as a supervisor would (and noted if it did);
3. gateway timeouts (answers later than SMSQ_SMSCLUB_TIMEOUT_SECONDS) and
   latency spikes (slow but answered);
4. a 5xx storm (50 x 503) and recovery;
5. bursts of 429 with Retry-After;
6. the store locked: this script holds `BEGIN EXCLUSIVE` on the SQLite file;
7. web down while Keccel (DLR mode `both`) pushes reports; polls catch up.

Then it waits for every message to be final (or `sent` with nothing left to
ask) and prints, per fault: delivered, other final statuses, lost (a row
stuck in queued/sending, or `sent` with a gateway id the simulator never
issued, or without an id and not in the book), duplicated ((number, text) more
than once in the book), the most send requests the simulator saw in any
sliding second against the limit, and the time from the first send_sms to the
last final status. Nothing is nudged: rows a killed worker (or an uncertain
send) left in `sending` wait for beat to settle them by itself (about
liveness.DEAD_AFTER after their claim, SMSQ_UNCERTAIN_SEND=reconcile); the notes
say how many it settled and how long after their claim.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlmodel import select

from producer import db, send_sms
from producer.models import Message, MessageEvent
from producer.status import TERMINAL, Status
from worker.sandbox.base import Fault, ProviderSim, max_in_window
from worker.stack import Stack

RATE = 40
WORKERS = 2
CONCURRENCY = 4
DELIVERY_SECONDS = 1.0
# Per fault, for every message to be final: above SMSQ_STUCK_SENDING_SECONDS (330 s,
# the bound for a claim whose process still beats) so even that is waited out.
WAIT_LIMIT = 420.0
REDIS_DOWN_SECONDS = 8.0
FAULT_ENV = {
    "SMSQ_KINGSMS_RATE_LIMIT": str(RATE),
    "SMSQ_SMSCLUB_RATE_LIMIT": str(RATE),
    "SMSQ_KECCEL_RATE_LIMIT": str(RATE),
    "SMSQ_SMSCLUB_TIMEOUT_SECONDS": "2",
    "SMSQ_KECCEL_DLR_MODE": "both",
    "SMSQ_PUSH_GRACE_SECONDS": "10",
    "SMSQ_TICK_SECONDS": "0.5",
    "SMSQ_POLL_SCHEDULE": "1,2,4,10,20,60",  # the default's shape (30,60,120,300,600,1800) / 30
    "SMSQ_RETRY_BASE_SECONDS": "0.5",
    "SMSQ_RETRY_CAP_SECONDS": "5",
    "SMSQ_SWEEP_AFTER_SECONDS": "20",
    "SMSQ_BREAKER_COOLDOWN_SECONDS": "2",
}
SEND_PATHS = {"kingsms": "/sms/send", "smsclub": "/sms/send", "keccel": "/message.asp"}
NUMBERS: dict[str, Callable[[int], str]] = {
    # last digit 1..7: the simulator delivers every one of them
    "kingsms": lambda i: f"2289{i:06d}{1 + i % 7}",
    "smsclub": lambda i: f"38067{i:06d}{1 + i % 7}",
    "keccel": lambda i: f"24385{i:06d}{1 + i % 7}",
}


@dataclass
class Run:
    name: str
    provider: str
    ids: list[str] = field(default_factory=list)
    texts: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (to, text)
    started: float = 0.0
    ended: float = 0.0
    notes: list[str] = field(default_factory=list)
    row: dict[str, object] = field(default_factory=dict)


class Suite:
    def __init__(self, stack: Stack, n: int) -> None:
        self.stack = stack
        self.n = n
        self.batch = 0
        assert stack.sandbox is not None
        self.sims: dict[str, ProviderSim] = stack.sandbox.sandbox.sims

    # -- helpers ---------------------------------------------------------
    def send(self, run: Run, count: int, offset: int = 0) -> None:
        tag = f"{run.name.split()[0]} {uuid.uuid4().hex[:6]}"
        base = self.batch * 100_000 + offset
        for i in range(count):
            to, text = NUMBERS[run.provider](base + i), f"fault {tag} #{offset + i}"
            mid = send_sms(to, text, provider=run.provider)
            run.ids.append(mid)
            run.texts[mid] = (to, text)

    def send_requests(self, run: Run, until: float | None = None) -> list[float]:
        path = SEND_PATHS[run.provider]
        return [
            r.at
            for r in list(self.sims[run.provider].requests)
            if r.at >= run.started and (until is None or r.at <= until) and r.path.endswith(path)
        ]

    def wait_requests(self, run: Run, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.send_requests(run)) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{run.name}: fewer than {count} send requests")
            time.sleep(0.05)

    def rows(self, run: Run) -> list[Message]:
        found: list[Message] = []
        with db.session() as s:
            for start in range(0, len(run.ids), 500):
                chunk = run.ids[start : start + 500]
                found += list(s.exec(select(Message).where(Message.id.in_(chunk))))  # type: ignore[union-attr]
        return found

    def settled_by_beat(self, run: Run) -> list[tuple[float, str]]:
        """(seconds from the claim, lookup answer) of each row of the run beat settled
        as an uncertain send (its `reconcile` events)."""
        found: list[tuple[float, str]] = []
        with db.session() as s:
            for start in range(0, len(run.ids), 500):
                chunk = run.ids[start : start + 500]
                events = s.exec(
                    select(MessageEvent)
                    .where(
                        MessageEvent.message_id.in_(chunk),  # type: ignore[union-attr]
                        MessageEvent.kind.in_(["status", "reconcile"]),  # type: ignore[attr-defined]
                    )
                    .order_by(MessageEvent.id)  # type: ignore[arg-type]
                ).all()
                claimed: dict[str, float] = {}
                for e in events:
                    if e.kind == "status" and e.note == "claimed for sending":
                        claimed[e.message_id or ""] = e.created_at.timestamp()
                    elif e.kind == "reconcile" and e.source == "beat":
                        since = e.created_at.timestamp() - claimed.get(e.message_id or "", 0.0)
                        answer = (e.note or "").split(" lookup: ", 1)[-1].split(":", 1)[0]
                        found.append((since, answer))
        return found

    def wait_final(self, run: Run, revive: bool = False) -> None:
        """Until every row is final, or `sent` with no poll due (nothing left to ask)."""
        terminal = {s.value for s in TERMINAL}
        deadline = time.monotonic() + WAIT_LIMIT
        while time.monotonic() < deadline:
            if revive:
                for name, code in self.stack.revive().items():
                    run.notes.append(f"{name} exited ({code}) and was restarted")
            rows = self.rows(run)
            open_rows = [
                r
                for r in rows
                if r.status not in terminal
                and not (r.status == Status.SENT.value and r.next_poll_at is None)
            ]
            if not open_rows:
                break
            time.sleep(0.5)
        else:
            run.notes.append(f"not all final after {WAIT_LIMIT:.0f}s")
        run.ended = time.time()

    def tally(self, run: Run) -> None:
        sim = self.sims[run.provider]
        wanted = {text for _to, text in run.texts.values()}
        book = [m for m in list(sim.messages.values()) if m.text in wanted]
        issued = {m.id for m in book}
        copies = Counter((m.to, m.text) for m in book)
        rows = self.rows(run)
        status = Counter(r.status for r in rows)
        terminal = {s.value for s in TERMINAL}
        lost = 0
        for r in rows:
            if r.status in (Status.QUEUED.value, Status.SENDING.value, Status.SCHEDULED.value):
                lost += 1
            elif r.status not in terminal or r.status == Status.DELIVERED.value:
                if r.provider_message_id:
                    lost += r.provider_message_id not in issued
                else:  # `sent` without an id: lost unless the gateway has it
                    lost += copies[run.texts[r.id]] == 0
        times = sorted(self.send_requests(run, until=run.ended))
        run.row = {
            "messages": len(rows),
            "delivered": status[Status.DELIVERED.value],
            "final other": sum(n for st, n in status.items() if st in terminal)
            - status[Status.DELIVERED.value],
            "lost": lost,
            "duplicated": sum(1 for n in copies.values() if n > 1),
            "max req/s": f"{max_in_window(times)} / {RATE}",
            "time": f"{run.ended - run.started:.0f} s",
        }
        others = {st: n for st, n in status.items() if st != Status.DELIVERED.value}
        if others:
            run.notes.append(
                "statuses besides delivered: " + ", ".join(f"{k} {v}" for k, v in others.items())
            )
        settled = self.settled_by_beat(run)
        if settled:
            delays = sorted(d for d, _ in settled)
            answers = Counter(a for _, a in settled)
            run.notes.append(
                f"{len(settled)} row(s) left in sending settled by beat itself "
                f"{delays[0]:.0f}-{delays[-1]:.0f} s after their claim (lookup: "
                + ", ".join(f"{k} {v}" for k, v in answers.items())
                + ")"
            )
        run.notes.append(f"{len(times)} send requests at the gateway, {len(issued)} in its book")

    def start(self, name: str, provider: str) -> Run:
        self.batch += 1
        run = Run(name, provider)
        run.started = time.time()
        return run

    # -- the faults -------------------------------------------------------
    def worker_sigkill(self) -> Run:
        run = self.start("worker SIGKILL mid-batch", "kingsms")
        sim = self.sims["kingsms"]
        self.send(run, self.n)
        self.wait_requests(run, self.n // 3)
        threads = WORKERS * CONCURRENCY
        hang = Fault(delay=3.0, passthrough=True, times=threads)
        sim.add_fault(hang)
        deadline = time.monotonic() + 10
        while any(f is hang for f in sim.faults) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        sending = Counter(r.status for r in self.rows(run))[Status.SENDING.value]
        self.stack.kill("w1")
        self.stack.restart("w1")
        run.notes.append(
            f"kill -9 w1 with {sending} row(s) sending ({threads} requests held 3 s); "
            "w1 restarted at once"
        )
        self.wait_final(run)
        return run

    def redis_restart(self) -> Run:
        run = self.start("Redis restart (AOF)", "smsclub")
        during = min(10, self.n // 10)
        self.send(run, self.n - during)
        self.wait_requests(run, self.n // 3)
        self.stack.stop_redis()
        down = time.monotonic()
        self.send(run, during, offset=self.n - during)  # rows kept, queued by the sweep
        time.sleep(max(0.0, REDIS_DOWN_SECONDS - (time.monotonic() - down)))
        self.stack.start_redis()
        run.notes.append(
            f"Redis down {time.monotonic() - down:.1f}s; {during} send_sms during the outage"
        )
        for name, code in self.stack.revive().items():
            run.notes.append(f"{name} exited ({code}) and was restarted (Stack.revive)")
        self.wait_final(run, revive=True)
        return run

    def timeouts(self) -> Run:
        run = self.start("gateway timeouts + latency spikes", "smsclub")
        sim = self.sims["smsclub"]
        self.send(run, self.n)
        self.wait_requests(run, self.n // 4)
        sim.add_fault(Fault(status=504, body="late", delay=4.0, times=15))
        # Answers after 4 s against a 2 s timeout: the gateway has the message, its
        # answer is lost (an uncertain send; SMSClub refuses a copy within 2 min: 453).
        sim.add_fault(Fault(delay=4.0, passthrough=True, times=15))
        sim.add_fault(Fault(delay=1.5, passthrough=True, times=40))  # slow, answered
        self.wait_requests(run, self.n * 6 // 10)
        sim.add_fault(Fault(delay=1.5, passthrough=True, times=40))
        sim.add_fault(Fault(status=504, body="late", delay=4.0, times=15))
        sim.add_fault(Fault(delay=4.0, passthrough=True, times=15))
        run.notes.append(
            "2 x (15 gateway errors after 4 s and 15 answers lost after 4 s, both "
            "against a 2 s timeout, + 40 answers after 1.5 s)"
        )
        self.wait_final(run)
        return run

    def storm_5xx(self) -> Run:
        run = self.start("5xx storm (50 x 503)", "smsclub")
        self.send(run, self.n)
        self.wait_requests(run, self.n // 4)
        self.sims["smsclub"].add_fault(Fault(status=503, times=50))
        self.wait_final(run)
        return run

    def bursts_429(self) -> Run:
        run = self.start("429 bursts with Retry-After", "smsclub")
        sim = self.sims["smsclub"]
        self.send(run, self.n)
        for share in (0.2, 0.5, 0.8):
            self.wait_requests(run, int(self.n * share))
            sim.add_fault(
                Fault(status=429, body="Too Many Requests", headers={"Retry-After": "2"}, times=20)
            )
        run.notes.append("3 bursts of 20 x 429, Retry-After: 2")
        self.wait_final(run)
        return run

    def store_locked(self) -> Run:
        run = self.start("store locked 5 s", "smsclub")
        self.send(run, self.n)
        self.wait_requests(run, self.n // 3)
        path = db.get_engine().url.database
        assert path
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        began = time.monotonic()
        conn.execute("BEGIN EXCLUSIVE")
        got = time.monotonic() - began
        time.sleep(5.0)
        conn.execute("ROLLBACK")
        conn.close()
        run.notes.append(f"BEGIN EXCLUSIVE held 5 s (took {got:.2f}s to get)")
        self.wait_final(run)
        return run

    def web_down(self) -> Run:
        from worker.callbacks import callback_url

        run = self.start("web down while gateway pushes", "keccel")
        sim = self.sims["keccel"]
        sim.update_account({"callback_url": callback_url("keccel")})
        pushed_before = len(sim.pushes)
        self.send(run, self.n)
        self.wait_requests(run, self.n // 4)
        self.stack.kill("web")
        down = time.monotonic()
        time.sleep(20)  # longer than the simulator's 5 push tries (about 15 s)
        self.stack.restart("web")
        self.stack.wait_ready()
        up = time.monotonic() - down
        self.wait_final(run)
        # The simulator records a push after its last try (and a last 10 s pause), so
        # one given up on may still be unrecorded when polls have made every row final.
        deadline = time.monotonic() + 60
        while len(sim.pushes) - pushed_before < len(run.ids) and time.monotonic() < deadline:
            time.sleep(0.5)
        pushes = list(sim.pushes)[pushed_before:]
        failed = sum(1 for p in pushes if p.get("status") != 200)
        run.notes.append(
            f"web down {up:.0f}s; {len(pushes)} pushes done, {failed} given up by the gateway "
            f"(5 tries); SMSQ_PUSH_GRACE_SECONDS={FAULT_ENV['SMSQ_PUSH_GRACE_SECONDS']}"
        )
        sim.update_account({"callback_url": None})
        return run


def print_table(runs: list[Run]) -> None:
    headers = ["fault", "messages", "delivered", "final other", "lost", "duplicated"]
    headers += ["max req/s seen vs limit", "time"]
    table = [[r.name, *(str(v) for v in r.row.values())] for r in runs]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    line = " | ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(headers, widths, strict=True))
    )
    print(line)
    print("-" * len(line))
    for row in table:
        print(
            " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="per fault (1000)")
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("SMSQ_")]:
        del os.environ[key]
    began = time.monotonic()
    load = os.getloadavg()[0]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="smsq-faults-") as tmp:
        stack = Stack(
            data_dir=Path(tmp),
            delivery_seconds=DELIVERY_SECONDS,
            workers=WORKERS,
            worker_concurrency=CONCURRENCY,
            extra_env=FAULT_ENV,
        )
        try:
            try:
                stack.start()
            except RuntimeError:
                for log in sorted((Path(tmp) / "logs").glob("*.log")):
                    print(f"== {log.name}", log.read_text()[-2000:], sep="\n")
                raise
            # The simulators drop a request whose client vanished (a killed worker, a
            # timeout): uvicorn logs each as a traceback, not a result.
            logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
            suite = Suite(stack, args.messages)
            for fault in (
                suite.worker_sigkill,
                suite.redis_restart,
                suite.timeouts,
                suite.storm_5xx,
                suite.bursts_429,
                suite.store_locked,
                suite.web_down,
            ):
                print(f"{fault.__name__} ...", flush=True)
                run = fault()
                suite.tally(run)
                runs.append(run)
        finally:
            stack.stop()
    total = time.monotonic() - began
    print()
    print("$ " + shlex.join(["python", "bench/faults.py", *sys.argv[1:]]))
    print(
        f"stack: {WORKERS} worker processes x {CONCURRENCY} threads, 1 beat, web, embedded "
        f"Redis (AOF), SQLite; simulators deliver after {DELIVERY_SECONDS:g}s; "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at start"
    )
    print("settings: " + " ".join(f"{k}={v}" for k, v in FAULT_ENV.items()))
    print()
    print_table(runs)
    print()
    for i, run in enumerate(runs, 1):
        for note in run.notes:
            print(f"{i}. {run.name}: {note}")
    print(f"\ntotal run time {total:.0f} s")
    bad = sum(int(r.row["lost"]) + int(r.row["duplicated"]) for r in runs)  # type: ignore[call-overload]
    return 1 if bad else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
