"""`make faults`: the fault suite, one embedded stack per store, one batch per fault, one table.

    .venv/bin/python bench/faults.py [--messages N] [--store sqlite|postgres|both] [--only F ...]

One stack per store (embedded Redis with AOF, two worker processes, one beat,
web, the gateway simulators in this process with a short delivery time, a
global rate limit on every provider used) takes one batch of N single sends
per fault, each message with its own text so the simulator's book can be
matched. The store is SQLite, or an embedded PostgreSQL 16 (the `pgserver`
wheel of the dev extra, as in tests/pg.py); `both` (the default when that
wheel is installed) runs the suite on each, one after the other:

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
6. the store locked: this script holds `BEGIN EXCLUSIVE` on the SQLite file,
   or `LOCK TABLE messages IN ACCESS EXCLUSIVE MODE` on PostgreSQL;
7. web down while Keccel (DLR mode `both`) pushes reports, longer than the
   gateway keeps trying a push: what it gives up on, polls catch up;
8. (PostgreSQL) the store unreachable: the server stopped (`pg_ctl stop -m
   fast`, every connection cut) for STORE_DOWN_SECONDS and started again, the
   gateways' answers held by workers meanwhile; `send_sms` calls during the
   outage get StoreUnavailable and are made again, as an app would, with the
   same idempotency key once the store is back;
9. faults in three places at once: a 503 storm at SMSClub while a worker is
   SIGKILLed with sends the gateway holds, and Redis is stopped and started;
10. kill -9 of a worker with a backlog, at a moment it holds a task whose rows it
   has not claimed (a burst of 429 with Retry-After: 5 just before makes both
   workers hold such tasks for their countdown), not restarted for
   TAKEOVER_DOWN_SECONDS and with the default sweep (120 s): the other worker
   takes those tasks at its heartbeat lapse (`worker.resilience.takeover`);
11. (a second stack, on a Sentinel group of real redis-server processes: primary,
   replica, three sentinels, `tests/sentinel.py`) kill -9 of the Redis primary
   mid-run; the replica is promoted and every Redis user follows it.

The `hosts` stack (`--store hosts`; root and iproute2) is PostgreSQL as a primary
and a synchronous standby, and each worker a host of its own: a Linux network
namespace with its own address, reaching Redis, both PostgreSQL servers and the
simulators over a veth pair (`tests/hosts.py`); beat and web stay on this
machine. Its faults:

12. w1's host cut off (its veth down: every packet dropped) for HOST_CUT_SECONDS
    while each of its threads holds a send at the gateway (KING SMS PRO), whose
    answers are lost in the cut; then healed;
13. w1's host cut off for LONG_CUT_SECONDS, longer than its heartbeat lasts, while
    it holds the gateway's answers (SMSClub; the store was locked while they came
    in): beat settles its claims, w2 takes its messages, then the host is healed
    and comes back with those answers, which must change nothing (fencing: a write
    needs the claim token it claimed with);
14. the PostgreSQL primary SIGKILLed mid-run (every process of it, as if its host
    died), the standby promoted PROMOTE_AFTER_SECONDS later (`pg_ctl promote`, as a
    failover manager does); every process finds it through the multi-host URL
    (`target_session_attrs=read-write`); `send_sms` calls in between get
    StoreUnavailable and are made again with the same idempotency key.

Then it waits for every message to be final (or `sent` with nothing left to
ask) and prints, per fault: delivered, other final statuses, lost (a row
stuck in queued/sending, or `sent` with a gateway id the simulator never
issued, or without an id and not in the book), duplicated ((number, text) more
than once in the book), the most send requests the simulator saw in any
sliding second against the limit, the seconds from the fault to the last row
becoming final, the p99 send delay (send_sms to the gateway's book) of the
messages caught in the fault (not yet at the gateway when it began), and the
time from the first send_sms to the last final status. Nothing is nudged: rows
a killed worker (or an uncertain send) left in `sending` wait for beat to settle
them by itself (liveness.DEAD_AFTER after their claim,
SMSQ_UNCERTAIN_SEND=reconcile); the notes say how many it settled and how long
after their claim.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import math
import os
import shlex
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text
from sqlmodel import select

from producer import StoreUnavailable, db, send_sms
from producer.models import Message, MessageEvent
from producer.queues import SEND_TASK
from producer.settings import reload_settings
from producer.status import TERMINAL, Status
from tests import hosts as netns
from tests.pg import EmbeddedPostgres, Replicated, replicated
from tests.pg import available as postgres_available
from tests.pg import start as start_postgres
from tests.sentinel import DOWN_AFTER_MS, SentinelGroup
from worker import redis_client
from worker.gateways.sandbox.base import Fault, ProviderSim, SimMessage, max_in_window
from worker.ops.stack import Placement, Stack
from worker.resilience import takeover

RATE = 40
STORE_DOWN_SECONDS = 10.0
WEB_DOWN_SECONDS = 30.0  # the simulator tries a push 5 times over about 15 s
TAKEOVER_DOWN_SECONDS = 60.0  # the killed worker stays down this long: the other takes over
# The takeover fault runs with the default sweep, so the sweep cannot be what saves the
# killed worker's messages (the suite's 20 s sweep would, before the heartbeat lapses).
TAKEOVER_SWEEP_SECONDS = 120
TAKEOVER_RETRY_AFTER = 5
WORKERS = 2
CONCURRENCY = 4
DELIVERY_SECONDS = 1.0
# Per fault, for every message to be final: above SMSQ_STUCK_SENDING_SECONDS (330 s,
# the bound for a claim whose process still beats) so even that is waited out.
WAIT_LIMIT = 420.0
REDIS_DOWN_SECONDS = 8.0
HOST_CUT_SECONDS = 30.0
# Longer than a heartbeat outlives its process (liveness.TTL_SECONDS, 30 s) plus the
# claim age beat waits for (liveness.DEAD_AFTER, 45 s): beat settles the host's claims.
LONG_CUT_SECONDS = 90.0
PROMOTE_AFTER_SECONDS = 5.0
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
    store: str = "sqlite"
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])  # in every text of the run
    ids: list[str] = field(default_factory=list)
    texts: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (to, text)
    started: float = 0.0
    fault_at: float = 0.0  # when the fault began (the columns "fault -> last final", "p99")
    ended: float = 0.0
    notes: list[str] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)  # processes that exited, with log tails
    row: dict[str, object] = field(default_factory=dict)


class Suite:
    def __init__(
        self,
        stack: Stack,
        n: int,
        pg: EmbeddedPostgres | None = None,
        hosts: netns.Hosts | None = None,
        pair: Replicated | None = None,
        group: SentinelGroup | None = None,
    ) -> None:
        self.stack = stack
        self.n = n
        self.pg = pg
        self.hosts = hosts
        self.pair = pair
        self.group = group
        self.store = "hosts" if hosts is not None else "postgres" if pg is not None else "sqlite"
        self.batch = 0
        assert stack.sandbox is not None
        self.sims: dict[str, ProviderSim] = stack.sandbox.sandbox.sims

    # -- helpers ---------------------------------------------------------
    def number_and_text(self, run: Run, i: int) -> tuple[str, str]:
        """Message `i` of the run: its own number and text (matched in the gateway's book)."""
        to = NUMBERS[run.provider](self.batch * 100_000 + i)
        return to, f"fault {run.name.split()[0]} {run.tag} #{i}"

    def send(self, run: Run, count: int, offset: int = 0) -> None:
        for i in range(offset, offset + count):
            to, text_ = self.number_and_text(run, i)
            mid = send_sms(to, text_, provider=run.provider)
            run.ids.append(mid)
            run.texts[mid] = (to, text_)

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

    def revive(self, run: Run) -> None:
        """Restart any process that exited (as a supervisor would); note it, with the end
        of its log (printed after the table) to show why."""
        logs = self.stack.data_dir / "logs"
        tails = {
            name: (logs / f"{name}.log").read_text(errors="replace")[-1500:]
            for name, proc in self.stack.processes.items()
            if proc.poll() is not None
        }
        for name, code in self.stack.revive().items():
            run.notes.append(f"{name} exited ({code}) and was restarted (Stack.revive)")
            run.exits.append(f"{run.store}, {run.name}: {name} exited ({code}):\n{tails[name]}")

    def wait_final(self, run: Run, revive: bool = False) -> None:
        """Until every row is final, or `sent` with no poll due (nothing left to ask)."""
        terminal = {s.value for s in TERMINAL}
        deadline = time.monotonic() + WAIT_LIMIT
        while time.monotonic() < deadline:
            if revive:
                self.revive(run)
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
        lost = len(run.ids) - len(rows)  # an id send_sms returned whose row is gone
        if lost:
            run.notes.append(f"{lost} id(s) returned by send_sms have no row in the store")
        for r in rows:
            if r.status in (Status.QUEUED.value, Status.SENDING.value, Status.SCHEDULED.value):
                lost += 1
            elif r.status not in terminal or r.status == Status.DELIVERED.value:
                if r.provider_message_id:
                    lost += r.provider_message_id not in issued
                else:  # `sent` without an id: lost unless the gateway has it
                    lost += copies[run.texts[r.id]] == 0
        times = sorted(self.send_requests(run, until=run.ended))
        recovery, p99 = self.recovery(run, rows, book)
        run.row = {
            "messages": len(run.ids),
            "delivered": status[Status.DELIVERED.value],
            "final other": sum(n for st, n in status.items() if st in terminal)
            - status[Status.DELIVERED.value],
            # At the gateway but no status to ask for (a copy refused with 453, or an
            # uncertain send not resent): `sent` with no poll due.
            "sent, no report": sum(
                1 for r in rows if r.status == Status.SENT.value and r.next_poll_at is None
            ),
            "lost": lost,
            "duplicated": sum(1 for n in copies.values() if n > 1),
            "max req/s": f"{max_in_window(times)} / {RATE}",
            "fault -> last final": recovery,
            "p99 send delay, caught": p99,
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
        twice = {key for key, n in copies.items() if n > 1}
        for r in [r for r in rows if run.texts[r.id] in twice][:3]:
            run.notes.append(f"sent twice: {r.id} ({r.status}): " + self.history(r.id))

    def recovery(self, run: Run, rows: list[Message], book: list[SimMessage]) -> tuple[str, str]:
        """(seconds from the fault to the last row becoming final; p99 send delay of the
        messages caught in it). Caught: not yet in the gateway's book when the fault
        began. Send delay: from `send_sms` to the gateway taking the message (its book),
        so it counts the wait behind the backlog as well as the fault's."""
        if not run.fault_at:
            return "-", "-"
        last = max(_ts(r.updated_at) for r in rows) - run.fault_at
        taken: dict[tuple[str, str], float] = {}
        for m in book:
            key = (m.to, m.text)
            taken[key] = min(taken.get(key, m.created), m.created)
        delays = sorted(
            taken[run.texts[r.id]] - _ts(r.created_at)
            for r in rows
            if run.texts[r.id] in taken and taken[run.texts[r.id]] >= run.fault_at
        )
        if not delays:
            return f"{last:.0f} s", "-"
        p99 = delays[min(len(delays) - 1, math.ceil(0.99 * len(delays)) - 1)]
        run.notes.append(
            f"{len(delays)} message(s) caught (not at the gateway when the fault began): "
            f"send delay p50 {delays[len(delays) // 2]:.1f} s, p99 {p99:.1f} s, "
            f"max {delays[-1]:.1f} s"
        )
        return f"{last:.0f} s", f"{p99:.1f} s"

    def history(self, mid: str) -> str:
        """A message's events, as seconds from its first one: what happened when."""
        with db.session() as s:
            events = s.exec(
                select(MessageEvent).where(MessageEvent.message_id == mid).order_by(MessageEvent.id)  # type: ignore[arg-type]
            ).all()
        if not events:
            return "no events"
        first = events[0].created_at.timestamp()
        return "; ".join(
            f"+{e.created_at.timestamp() - first:.1f}s {e.kind} {e.new_status or ''} "
            f"{(e.note or '')[:90]}".strip()
            for e in events
        )

    @contextlib.contextmanager
    def settings(self, **overrides: str) -> Iterator[None]:
        """Workers and beat (and this process) run with `overrides` inside the block:
        they are stopped (SIGTERM, a warm shutdown), started again with them, and again
        with the suite's own settings after it."""

        def respawn(env: dict[str, str | None]) -> None:
            names = [*self.stack.worker_names, *self.stack.beat_names]
            for name in names:
                self.stack.kill(name, signal.SIGTERM)
            for key, value in env.items():
                for target in (os.environ, self.stack.env):
                    if value is None:
                        target.pop(key, None)
                    else:
                        target[key] = value
            reload_settings()
            for name in names:
                self.stack.restart(name)
            self.stack.wait_ready()

        before = {key: os.environ.get(key) for key in overrides}
        respawn(dict(overrides))
        try:
            yield
        finally:
            respawn(before)

    def start(self, name: str, provider: str) -> Run:
        self.batch += 1
        run = Run(name, provider, self.store)
        run.started = time.time()
        return run

    def hold_every_thread(self, run: Run, *then: Fault, delay: float = 3.0) -> tuple[int, int]:
        """The next request of every worker thread held `delay` s by the gateway (taken
        at once, answered late), then the faults `then`; once all are held: (threads,
        rows of the run in `sending`)."""
        sim = self.sims[run.provider]
        threads = WORKERS * CONCURRENCY
        hang = Fault(delay=delay, passthrough=True, times=threads)
        sim.add_fault(hang)
        for fault in then:
            sim.add_fault(fault)
        deadline = time.monotonic() + 10
        while any(f is hang for f in sim.faults) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        return threads, Counter(r.status for r in self.rows(run))[Status.SENDING.value]

    # -- the faults -------------------------------------------------------
    def worker_sigkill(self) -> Run:
        run = self.start("worker SIGKILL mid-batch", "kingsms")
        self.send(run, self.n)
        self.wait_requests(run, self.n // 3)
        threads, sending = self.hold_every_thread(run)
        run.fault_at = time.time()
        self.stack.kill("w1")
        self.stack.restart("w1")
        run.notes.append(
            f"kill -9 w1 with {sending} row(s) sending ({threads} requests held 3 s); "
            "w1 restarted at once"
        )
        self.wait_final(run)
        return run

    def worker_takeover(self) -> Run:
        """kill -9 of a worker with a backlog, at a moment it holds a task whose rows it
        has not claimed (waiting for the countdown of a 429's Retry-After, prefetched,
        or started and waiting for the store's lock), and no restart for
        TAKEOVER_DOWN_SECONDS: the other worker takes those tasks at the
        killed one's heartbeat lapse (`worker.resilience.takeover`); the rows it had
        claimed are settled by beat (`reconcile`, KING SMS PRO's lookup)."""
        with self.settings(SMSQ_SWEEP_AFTER_SECONDS=str(TAKEOVER_SWEEP_SECONDS)):
            return self._worker_takeover()

    def _worker_takeover(self) -> Run:
        run = self.start(
            f"worker SIGKILL, no restart, sweep {TAKEOVER_SWEEP_SECONDS} s: takeover", "kingsms"
        )
        self.send(run, self.n)
        self.wait_requests(run, self.n // 4)
        # A burst of 429 with Retry-After: the rows go back to `queued` and both workers
        # hold their tasks for the countdown, unstarted (what a worker holds besides
        # the tasks it runs: prefetch is one per thread here).
        burst = Fault(
            status=429,
            body="Too Many Requests",
            headers={"Retry-After": str(TAKEOVER_RETRY_AFTER)},
            times=16,
        )
        sim = self.sims["kingsms"]
        sim.add_fault(burst)
        deadline = time.monotonic() + 10
        while any(f is burst for f in sim.faults) and time.monotonic() < deadline:
            time.sleep(0.02)  # every 429 answered: their tasks wait for the countdown
        pid = self.stack.processes["w1"].pid
        deadline = time.monotonic() + 20
        owner, held = None, set()
        while time.monotonic() < deadline:
            os.killpg(pid, signal.SIGSTOP)  # frozen where it stands: what it holds is exact
            owner = reserving_owner(pid)
            held = held_unclaimed(owner) if owner else set()
            if held:
                break
            os.killpg(pid, signal.SIGCONT)
            time.sleep(0.05)
        claimed = claimed_by(owner) if owner else 0
        run.fault_at = time.time()
        self.stack.kill("w1")  # frozen (SIGSTOP) when `held` was read: killed as it stood
        put_back = None
        while time.time() < run.fault_at + TAKEOVER_DOWN_SECONDS:
            if put_back is None and owner and not is_reserving(owner):
                put_back = time.time() - run.fault_at
            time.sleep(0.2)
        self.stack.restart("w1")
        with db.session() as s:
            rows = s.exec(select(Message).where(Message.id.in_(list(held)))).all()  # type: ignore[union-attr]
        final_after = max((_ts(r.updated_at) - run.fault_at for r in rows), default=0.0)
        run.notes.append(
            f"16 x 429 (Retry-After: {TAKEOVER_RETRY_AFTER}) a moment before; kill -9 w1 "
            f"holding {len(held)} unclaimed message(s) in its tasks and "
            f"{claimed} claimed row(s) sending; its tasks put back "
            + (f"{put_back:.0f} s after the kill (heartbeat lapse)" if put_back else "never")
            + f", those messages final {final_after:.0f} s after it; w1 restarted after "
            f"{TAKEOVER_DOWN_SECONDS:.0f} s"
        )
        self.wait_final(run)
        return run

    def redis_failover(self) -> Run:
        """(A stack on a Sentinel group: primary, replica, three sentinels.) SIGKILL of
        the Redis primary mid-run, ten send_sms during the failover; the sentinels
        promote the replica. Every Redis user must follow the new master, the rate
        limiter must not grant past the limit on a master that may lack the last
        grants, and no worker or beat may exit (a process that does is restarted,
        as a supervisor would, and noted)."""
        assert self.group is not None
        run = self.start("Redis primary SIGKILL, Sentinel failover", "smsclub")
        during = min(10, self.n // 10)
        self.send(run, self.n - during)
        self.wait_requests(run, self.n // 3)
        old = self.group.master_port()
        run.fault_at = time.time()
        self.group.kill_primary()
        self.send(run, during, offset=self.n - during)  # the app goes on calling send_sms
        promoted = self.group.wait_promoted(old)
        run.notes.append(
            f"kill -9 of the Redis primary; the replica promoted {promoted:.1f} s later "
            f"(3 sentinels, quorum 2, down after {DOWN_AFTER_MS} ms); {during} send_sms "
            "during the failover"
        )
        self.wait_final(run, revive=True)
        logs = self.stack.data_dir / "logs"
        held = sum(
            path.read_text(errors="replace").count("the Redis master changed")
            for path in logs.glob("w*.log")
        )
        exited = [note for note in run.notes if "exited" in note]
        run.notes.append(
            f"{held} worker process(es) saw the master change and held rate-limit grants "
            f"one window; {'no worker or beat exited' if not exited else 'see the exits above'}"
        )
        return run

    def compound(self) -> Run:
        """Faults in three places at once: a 503 storm at SMSClub, and meanwhile a
        worker SIGKILLed with sends the gateway holds, and Redis stopped and started.
        The killed worker's sends have no lookup at SMSClub: beat resends them while
        SMSClub still refuses a copy (453), so none is lost and none doubled."""
        run = self.start("503 storm + SIGKILL + Redis restart", "smsclub")
        self.send(run, self.n)
        self.wait_requests(run, self.n // 4)
        run.fault_at = time.time()
        threads, sending = self.hold_every_thread(run, Fault(status=503, times=50))
        self.stack.kill("w1")
        self.stack.stop_redis()
        down = time.monotonic()
        time.sleep(REDIS_DOWN_SECONDS)
        self.stack.start_redis()
        self.stack.restart("w1")
        run.notes.append(
            f"kill -9 w1 with {sending} row(s) sending ({threads} requests held 3 s, then "
            f"50 x 503); Redis down {time.monotonic() - down:.1f}s; w1 restarted"
        )
        self.wait_final(run, revive=True)
        return run

    def redis_restart(self) -> Run:
        run = self.start("Redis restart (AOF)", "smsclub")
        during = min(10, self.n // 10)
        self.send(run, self.n - during)
        self.wait_requests(run, self.n // 3)
        run.fault_at = time.time()
        self.stack.stop_redis()
        down = time.monotonic()
        self.send(run, during, offset=self.n - during)  # rows kept, queued by the sweep
        time.sleep(max(0.0, REDIS_DOWN_SECONDS - (time.monotonic() - down)))
        self.stack.start_redis()
        run.notes.append(
            f"Redis down {time.monotonic() - down:.1f}s; {during} send_sms during the outage"
        )
        self.revive(run)
        self.wait_final(run, revive=True)
        return run

    def timeouts(self) -> Run:
        run = self.start("gateway timeouts + latency spikes", "smsclub")
        sim = self.sims["smsclub"]
        self.send(run, self.n)
        self.wait_requests(run, self.n // 4)
        run.fault_at = time.time()
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
        run.fault_at = time.time()
        self.sims["smsclub"].add_fault(Fault(status=503, times=50))
        self.wait_final(run)
        return run

    def bursts_429(self) -> Run:
        run = self.start("429 bursts with Retry-After", "smsclub")
        sim = self.sims["smsclub"]
        self.send(run, self.n)
        for share in (0.2, 0.5, 0.8):
            self.wait_requests(run, int(self.n * share))
            run.fault_at = run.fault_at or time.time()
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
        run.fault_at = time.time()
        if self.pg is not None:
            with db.get_engine().connect() as conn:
                began = time.monotonic()
                conn.execute(text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
                got = time.monotonic() - began
                time.sleep(5.0)
                conn.rollback()
            run.notes.append(
                f"LOCK TABLE messages IN ACCESS EXCLUSIVE MODE held 5 s (took {got:.2f}s to get)"
            )
            self.wait_final(run)
            return run
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

    def store_down(self) -> Run:
        """PostgreSQL stopped mid-run and started again; the app's send_sms calls made
        during the outage are refused (StoreUnavailable) and made again afterwards."""
        assert self.pg is not None
        run = self.start(f"store unreachable {STORE_DOWN_SECONDS:.0f} s", "smsclub")
        during = min(10, self.n // 10)
        self.send(run, self.n - during)
        self.wait_requests(run, self.n // 3)
        run.fault_at = time.time()
        self.pg.down()
        down = time.monotonic()
        refused: list[tuple[str, str, str]] = []
        for i in range(during):
            to, text_ = self.number_and_text(run, self.n - during + i)
            key = f"fault-{uuid.uuid4().hex[:12]}"
            try:
                mid = send_sms(to, text_, provider=run.provider, idempotency_key=key)
            except StoreUnavailable:
                refused.append((to, text_, key))
            else:  # stored after all (the store came back early): keep it
                run.ids.append(mid)
                run.texts[mid] = (to, text_)
        time.sleep(max(0.0, STORE_DOWN_SECONDS - (time.monotonic() - down)))
        self.pg.up()
        up = time.monotonic() - down
        for to, text_, key in refused:  # the app tries again, same key
            mid = send_sms(to, text_, provider=run.provider, idempotency_key=key)
            run.ids.append(mid)
            run.texts[mid] = (to, text_)
        run.notes.append(
            f"PostgreSQL down {up:.1f}s; {len(refused)} of {during} send_sms during the "
            "outage refused with StoreUnavailable, then sent again with the same key"
        )
        self.wait_final(run)
        run.notes.append(self.worker_store_retries())
        return run

    def worker_store_retries(self) -> str:
        """How often the workers' logs say they waited for the store (worker.store.retry)."""
        logs = self.stack.data_dir / "logs"
        lines = [
            line
            for path in logs.glob("w*.log")
            for line in path.read_text(errors="replace").splitlines()
        ]
        waited = sum("store unavailable while" in line for line in lines)
        back = sum("store reachable again" in line for line in lines)
        requeued = sum("not claimed, queued again" in line for line in lines)
        return (
            f"workers: {waited} store write(s) tried again, {back} landed after the outage, "
            f"{requeued} claim(s) queued again"
        )

    def web_down(self) -> Run:
        """Web killed for WEB_DOWN_SECONDS while Keccel pushes: longer than the simulator
        keeps trying a push (5 tries over about 15 s), so some pushes are given up and
        only the polls of `both` mode (after SMSQ_PUSH_GRACE_SECONDS) bring those
        messages to their final status."""
        from worker.tracking.callback_urls import callback_url

        run = self.start("web down while gateway pushes", "keccel")
        sim = self.sims["keccel"]
        sim.update_account({"callback_url": callback_url("keccel")})
        pushed_before = len(sim.pushes)
        self.send(run, self.n)
        self.wait_requests(run, self.n // 4)
        run.fault_at = time.time()
        self.stack.kill("web")
        down = time.monotonic()
        time.sleep(WEB_DOWN_SECONDS)
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
        given_up = {p["params"].get("messageID") for p in pushes if p.get("status") != 200}
        by_poll = self.final_by_poll(run)
        run.notes.append(
            f"web down {up:.0f}s; {len(pushes)} pushes, {len(given_up)} given up by the "
            f"gateway after 5 tries; {len(by_poll)} messages made final by a poll "
            f"(SMSQ_PUSH_GRACE_SECONDS={FAULT_ENV['SMSQ_PUSH_GRACE_SECONDS']}), "
            f"{len(given_up - by_poll)} of those given up not"
        )
        sim.update_account({"callback_url": None})
        return run

    # -- hosts and partitions, PostgreSQL failover (the `hosts` stack) ------------
    def held_by(self, run: Run, worker: str) -> int:
        """Rows of the run in `sending` under a claim of process `worker`."""
        pid = f":{self.stack.processes[worker].pid}:"
        return sum(
            1
            for r in self.rows(run)
            if r.status == Status.SENDING.value and pid in (r.claimed_by or "")
        )

    def requests_from(self, run: Run, host: netns.Host, since: int) -> int:
        """Send requests the gateway got from `host` since its `since`-th request."""
        path = SEND_PATHS[run.provider]
        got = list(self.sims[run.provider].requests)[since:]
        return sum(1 for r in got if r.client == host.inner and r.path.endswith(path))

    def stale_writes(self, run: Run) -> str:
        return f"{self.stale_count(run)} stale write(s) refused by the claim-token fence"

    def stale_count(self, run: Run) -> int:
        """How many writes the fence refused (`transitions.stale_write`): a worker came
        back with something to store for rows no longer under its claim."""
        with db.session() as s:
            count = 0
            for start in range(0, len(run.ids), 500):
                chunk = run.ids[start : start + 500]
                count += len(
                    s.exec(
                        select(MessageEvent.id).where(
                            MessageEvent.message_id.in_(chunk),  # type: ignore[union-attr]
                            MessageEvent.applied == False,  # noqa: E712
                            MessageEvent.note.startswith("not applied: this worker's claim"),  # type: ignore[union-attr]
                        )
                    ).all()
                )
        return count

    def partition_short(self) -> Run:
        """w1's host cut off while each of its threads holds a send at the gateway: the
        answers are lost in the cut (KING SMS PRO has a lookup: beat finds them)."""
        assert self.hosts is not None
        run = self.start(f"host cut off {HOST_CUT_SECONDS:.0f} s mid-send", "kingsms")
        self.send(run, self.n)
        self.wait_requests(run, self.n // 4)
        seen = len(self.sims[run.provider].requests)
        threads, _sending = self.hold_every_thread(run)
        host = self.hosts[1]
        held = self.requests_from(run, host, seen)
        rows = self.held_by(run, "w1")
        host.cut()
        time.sleep(HOST_CUT_SECONDS)
        down = host.heal()
        run.notes.append(
            f"w1's host ({host.inner}) cut off {down:.1f}s with {held} of the {threads} "
            f"requests held 3 s by the gateway its own ({rows} row(s) sending under its "
            "claims); the answers came during the cut"
        )
        self.wait_final(run, revive=True)
        run.notes.append(self.stale_writes(run))
        return run

    def partition_long(self) -> Run:
        """w1's host cut off for longer than its heartbeat, while it holds the gateway's
        answers: beat settles its claims and w2 takes its messages; then it comes back
        with those answers, which the fence refuses."""
        assert self.hosts is not None
        run = self.start(f"host cut off {LONG_CUT_SECONDS:.0f} s holding answers", "smsclub")
        sim = self.sims[run.provider]
        self.send(run, self.n)
        self.wait_requests(run, self.n // 4)
        hang = Fault(delay=1.5, passthrough=True, times=WORKERS * CONCURRENCY)
        seen = len(sim.requests)
        sim.add_fault(hang)
        deadline = time.monotonic() + 10
        while any(f is hang for f in sim.faults) and time.monotonic() < deadline:
            time.sleep(0.01)
        host = self.hosts[1]
        with db.get_engine().connect() as conn:
            # The answers come in while the store is locked: every worker holds them,
            # waiting to store them, when w1's host is cut off.
            conn.execute(text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
            time.sleep(2.0)
            held = self.requests_from(run, host, seen)
            host.cut()
            conn.rollback()
        time.sleep(LONG_CUT_SECONDS)
        down = host.heal()
        healed = time.monotonic()
        run.notes.append(
            f"w1's host ({host.inner}) cut off {down:.1f}s holding the gateway's answers for "
            f"its {held} request(s) (the store locked while they came in)"
        )
        self.wait_final(run, revive=True)
        # Then w1 comes back with its answers (once TCP's retransmission, backed off
        # through the cut, gets through): every one of them must be refused.
        deadline = time.monotonic() + WAIT_LIMIT
        while self.stale_count(run) < held and time.monotonic() < deadline:
            time.sleep(0.5)
        run.notes.append(
            self.stale_writes(run) + f", {time.monotonic() - healed:.0f} s after the heal"
        )
        return run

    def primary_lost(self) -> Run:
        """The PostgreSQL primary SIGKILLed mid-run, the standby promoted; send_sms
        calls in between refused and made again with the same key."""
        assert self.pair is not None
        run = self.start("PostgreSQL primary lost", "smsclub")
        during = min(10, self.n // 10)
        self.send(run, self.n - during)
        self.wait_requests(run, self.n // 3)
        killed = self.pair.primary.kill()
        down = time.monotonic()
        refused: list[tuple[str, str, str]] = []
        for i in range(during):
            to, text_ = self.number_and_text(run, self.n - during + i)
            key = f"fault-{uuid.uuid4().hex[:12]}"
            try:
                mid = send_sms(to, text_, provider=run.provider, idempotency_key=key)
            except StoreUnavailable:
                refused.append((to, text_, key))
            else:
                run.ids.append(mid)
                run.texts[mid] = (to, text_)
        time.sleep(max(0.0, PROMOTE_AFTER_SECONDS - (time.monotonic() - down)))
        self.pair.standby.promote()
        promoted = time.monotonic() - down
        for to, text_, key in refused:
            mid = send_sms(to, text_, provider=run.provider, idempotency_key=key)
            run.ids.append(mid)
            run.texts[mid] = (to, text_)
        run.notes.append(
            f"primary SIGKILLed ({killed} processes), standby promoted {promoted:.1f}s later; "
            f"{len(refused)} of {during} send_sms in between refused with StoreUnavailable, "
            "then sent again with the same key"
        )
        self.wait_final(run, revive=True)
        found = len(self.rows(run))
        run.notes.append(
            f"{found} of the {len(run.ids)} ids send_sms returned are on the promoted standby"
        )
        run.notes.append(self.worker_store_retries())
        return run

    def final_by_poll(self, run: Run) -> set[str]:
        """Gateway ids of the run's messages whose final status came from a poll."""
        with db.session() as s:
            found: set[str] = set()
            for start in range(0, len(run.ids), 500):
                chunk = run.ids[start : start + 500]
                events = s.exec(
                    select(MessageEvent).where(
                        MessageEvent.message_id.in_(chunk),  # type: ignore[union-attr]
                        MessageEvent.source == "poll",
                        MessageEvent.applied == True,  # noqa: E712
                        MessageEvent.new_status.in_([t.value for t in TERMINAL]),  # type: ignore[union-attr]
                    )
                ).all()
                found |= {e.provider_message_id for e in events if e.provider_message_id}
        return found


def reserving_owner(pid: int) -> str | None:
    """The claim id of worker process `pid` among those holding task records."""
    owners = [o.decode() for o in redis_client.shared().smembers(takeover.OWNERS)]
    return next((o for o in owners if o.split(":")[-2] == str(pid)), None)


def is_reserving(owner: str) -> bool:
    return bool(redis_client.shared().sismember(takeover.OWNERS, owner))


def held_unclaimed(owner: str) -> set[str]:
    """Message ids in the tasks `owner` holds unacked whose rows are still `queued`."""
    client = redis_client.shared()
    ids: set[str] = set()
    for value in client.hvals(takeover.KEY.format(owner)):
        raw = client.hget("unacked", takeover.parse(value)[0])
        if raw is not None:
            payload = json.loads(raw)[0]
            if payload["headers"].get("task") == SEND_TASK:
                ids.update(json.loads(base64.b64decode(payload["body"]))[0][0])
    if not ids:
        return set()
    with db.session() as s:
        rows = s.exec(select(Message.id, Message.status).where(Message.id.in_(list(ids)))).all()  # type: ignore[union-attr]
    return {mid for mid, status in rows if status == Status.QUEUED.value}


def claimed_by(owner: str) -> int:
    with db.session() as s:
        return len(
            s.exec(
                select(Message.id).where(
                    Message.claimed_by == owner, Message.status == Status.SENDING.value
                )
            ).all()
        )


def _ts(when: datetime) -> float:
    """A store time (naive UTC on SQLite) as a Unix timestamp."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def print_table(runs: list[Run]) -> None:
    headers = ["store", "fault", "messages", "delivered", "final other", "sent, no report"]
    headers += ["lost", "duplicated"]
    headers += ["max req/s seen vs limit", "fault -> last final", "p99 send delay, caught", "time"]
    table = [[r.store, r.name, *(str(v) for v in r.row.values())] for r in runs]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    line = " | ".join(
        h.ljust(w) if i < 2 else h.rjust(w)
        for i, (h, w) in enumerate(zip(headers, widths, strict=True))
    )
    print(line)
    print("-" * len(line))
    for row in table:
        print(
            " | ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


PROCESS_FAULTS = [
    "worker_sigkill",
    "redis_restart",
    "timeouts",
    "storm_5xx",
    "bursts_429",
    "store_locked",
    "web_down",
    "compound",
    "worker_takeover",
]
FAULTS = {
    "sqlite": PROCESS_FAULTS,
    "postgres": [*PROCESS_FAULTS[:6], "store_down", *PROCESS_FAULTS[6:]],
    "hosts": ["partition_short", "partition_long", "primary_lost"],
}
SENTINEL_FAULTS = ["redis_failover"]  # on a stack of their own, on a Sentinel group
ALL_FAULTS = [*dict.fromkeys([f for names in FAULTS.values() for f in names]), *SENTINEL_FAULTS]


def run_suite(
    store: str, n: int, only: list[str] | None, keep_logs: Path | None = None
) -> list[Run]:
    """Every fault (or those named in `only`) on new stacks whose store is `store`: one
    on an embedded Redis, then (sqlite, postgres) one on a Sentinel group for the
    failover. `keep_logs`: where to copy the stacks' process logs before removal."""
    names = [name for name in FAULTS[store] if not only or name in only]
    failover = [f for f in SENTINEL_FAULTS if store != "hosts" and (not only or f in only)]
    if not names and not failover:
        return []
    for key in [k for k in os.environ if k.startswith("SMSQ_")]:
        del os.environ[key]  # a fresh stack: its own Redis, store and settings
    db.reset_engine()
    runs: list[Run] = []
    with contextlib.ExitStack() as cleanup:
        env = dict(FAULT_ENV)
        options: dict[str, object] = {}
        pg = pair = hosts = None
        if store == "postgres":
            pg = start_postgres()
            cleanup.callback(pg.stop)
            env["SMSQ_DATABASE_URL"] = pg.database("faults")
        if store == "hosts":
            hosts = cleanup.enter_context(netns.Hosts(WORKERS))
            listen = tuple(hosts.outer_addresses)
            pair = replicated(listen=listen, network=f"{hosts.subnet}.0/24")
            cleanup.callback(pair.stop)
            env["SMSQ_DATABASE_URL"] = pair.database("faults")
            options["listen"] = listen
            options["placements"] = {
                f"w{h.index}": Placement(tuple(h.wrap([])), h.outer) for h in hosts.hosts
            }
        tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="smsq-faults-")))
        if names:
            on = OnStack(store, tmp / "main", env, n, pg, hosts, pair, options=options)
            runs += run_on_stack(on, names, keep_logs)
        if failover:
            with SentinelGroup(tmp / "sentinel") as group:
                on = OnStack(store, tmp / "on-sentinel", env, n, pg, group=group)
                runs += run_on_stack(on, failover, keep_logs)
    return runs


@dataclass
class OnStack:
    """Where a run of faults happens: its store, its data directory and environment,
    and (as the store needs) PostgreSQL, network-namespace hosts, a standby pair or a
    Sentinel group."""

    store: str
    data_dir: Path
    env: dict[str, str]
    n: int
    pg: EmbeddedPostgres | None = None
    hosts: netns.Hosts | None = None
    pair: Replicated | None = None
    group: SentinelGroup | None = None
    options: dict[str, object] = field(default_factory=dict)


def run_on_stack(on: OnStack, faults: list[str], keep_logs: Path | None = None) -> list[Run]:
    runs: list[Run] = []
    stack = Stack(
        data_dir=on.data_dir,
        delivery_seconds=DELIVERY_SECONDS,
        workers=WORKERS,
        worker_concurrency=CONCURRENCY,
        extra_env=on.env,
        broker=on.group.url if on.group else None,
        **on.options,  # type: ignore[arg-type]
    )
    try:
        try:
            stack.start()
        except RuntimeError:
            print(stack.log_tails())
            raise
        # The simulators drop a request whose client vanished (a killed worker, a
        # timeout): uvicorn logs each as a traceback, not a result.
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
        suite = Suite(stack, on.n, on.pg, on.hosts, on.pair, on.group)
        for name in faults:
            print(f"{on.store}: {name} ...", flush=True)
            run = getattr(suite, name)()
            suite.tally(run)
            runs.append(run)
    finally:
        if keep_logs is not None and (on.data_dir / "logs").exists():
            target = keep_logs / on.store / on.data_dir.name
            shutil.copytree(on.data_dir / "logs", target, dirs_exist_ok=True)
        stack.stop()
        for key in stack.exported:  # the next stack starts from a clean environment
            os.environ.pop(key, None)
        db.reset_engine()
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="per fault (1000)")
    no_hosts = netns.why_unavailable()
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgres", "hosts", "both", "all"],
        default=("both" if no_hosts else "all") if postgres_available() else "sqlite",
        help="the stack: sqlite, postgres, hosts (PostgreSQL primary + standby, workers "
        "in network namespaces; root), both (sqlite, postgres), all (the three; the "
        "default with the pgserver wheel, as root)",
    )
    parser.add_argument(
        "--only", nargs="*", default=None, choices=ALL_FAULTS, help="fault names (all of them)"
    )
    parser.add_argument(
        "--keep-logs", type=Path, default=None, help="copy each stack's process logs here"
    )
    args = parser.parse_args()
    if args.store != "sqlite" and not postgres_available():
        parser.error("no embedded PostgreSQL: install the dev extra (the pgserver wheel)")
    if args.store in ("hosts", "all") and no_hosts:
        parser.error(f"the hosts stack cannot run here: {no_hosts}")
    # SIGTERM (a CI timeout): unwind, so the stacks, servers and namespaces are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.monotonic()
    load = os.getloadavg()[0]
    stores = {"both": ["sqlite", "postgres"], "all": ["sqlite", "postgres", "hosts"]}.get(
        args.store, [args.store]
    )
    if args.store == "both" and no_hosts and postgres_available():
        print(f"hosts stack left out: {no_hosts}")
    runs: list[Run] = []
    for store in stores:
        runs += run_suite(store, args.messages, args.only, args.keep_logs)
        if store != stores[-1]:
            print_table(runs)  # so far: kept even if a later stack breaks
    total = time.monotonic() - began
    print()
    print("$ " + shlex.join(["python", "bench/faults.py", *sys.argv[1:]]))
    print(
        f"stack per store: {WORKERS} worker processes x {CONCURRENCY} threads, 1 beat, web, "
        f"embedded Redis (AOF), and for the failover a Sentinel group (primary, replica, "
        f"3 sentinels); stores: {', '.join(stores)} (PostgreSQL 16 embedded); "
        f"simulators deliver after {DELIVERY_SECONDS:g}s; "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at start"
    )
    if "hosts" in stores:
        print(
            f"hosts: PostgreSQL 16 primary + synchronous standby (synchronous_commit=on), "
            f"each of the {WORKERS} workers in its own network namespace (veth pair); "
            "beat and web on the machine"
        )
    print("settings: " + " ".join(f"{k}={v}" for k, v in FAULT_ENV.items()))
    print()
    print_table(runs)
    print()
    for i, run in enumerate(runs, 1):
        for note in run.notes:
            print(f"{i}. {run.store}, {run.name}: {note}")
    for run in runs:
        for text_ in run.exits:
            print(f"\n-- {text_}")
    print(f"\ntotal run time {total:.0f} s")
    bad = sum(int(r.row["lost"]) + int(r.row["duplicated"]) for r in runs)  # type: ignore[call-overload]
    return 1 if bad else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
