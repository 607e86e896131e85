"""SIGTERM (what systemd, Docker, Kubernetes and honcho send) lets the worker finish
the sends it has started, stores their answers, hands back what it had not
started, and exits: nothing lost, nothing sent twice. Worker and beat exit within
10 s of it even while Redis is stopped or does not answer (their own stack).

Runs late in the package (it stops and restarts the shared worker).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from producer import db, get_status, send_sms
from producer.models import Message
from producer.status import Status
from tests.integration.conftest import running_stack, wait_for, wait_status
from worker.gateways.sandbox.base import Fault
from worker.ops.stack import Stack

pytestmark = pytest.mark.integration


def test_sigterm_lets_in_flight_sends_finish(stack, sims) -> None:  # type: ignore[no-untyped-def]
    sim = sims["keccel"]
    text = f"shutdown {uuid.uuid4().hex[:8]}"
    # Each send takes 3 s at the gateway: the worker is mid-request when told to stop.
    sim.add_fault(Fault(delay=3.0, passthrough=True, times=20))
    ids = [send_sms(f"24385123456{i}", text, provider="keccel") for i in range(1, 7)]

    def in_flight() -> bool:
        with db.session() as s:
            rows = [s.get(Message, mid) for mid in ids]
        return sum(1 for r in rows if r is not None and r.status == "sending") >= 2

    wait_for(in_flight, timeout=20, every=0.05)
    started_sending = {mid for mid in ids if get_status(mid).status == "sending"}  # type: ignore[union-attr]
    proc = stack.processes["worker"]
    stack.kill("worker", signal.SIGTERM)
    assert proc.returncode is not None  # it exited by itself (kill waits for it)
    # What it had started is stored as sent, not left uncertain in `sending`.
    for mid in started_sending:
        assert get_status(mid).status in ("sent", "delivered"), mid  # type: ignore[union-attr]
    sim.faults.clear()
    stack.restart("worker")
    stack.wait_ready()
    for mid in ids:
        wait_status(mid, Status.DELIVERED, timeout=60)
    at_gateway = [m for m in sim.messages.values() if m.text == text]
    assert sorted(m.to for m in at_gateway) == sorted(f"24385123456{i}" for i in range(1, 7))
    time.sleep(1.0)
    assert len([m for m in sim.messages.values() if m.text == text]) == 6  # none twice


# -- stops while Redis is unreachable -----------------------------------------------
STOP_BOUND = 10.0  # what `systemctl stop` and a Kubernetes rollout are promised


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own (one worker, one beat, no web): these tests stop its Redis."""
    with running_stack(
        tmp_path_factory.mktemp("stops"),
        delivery_seconds=0.5,
        worker_concurrency=2,
        web=False,
        extra_env={"SMSQ_TICK_SECONDS": "0.5"},
    ) as running:
        yield running


def redis_pid(stack: Stack) -> int:
    return int((stack.data_dir / "redis.pid").read_text().strip())


def fresh(stack: Stack) -> None:
    """Redis up, the worker and beat running again (a test before stopped them)."""
    stack.start_redis()
    for name in ("worker", "beat"):
        if stack.processes[name].poll() is not None:
            stack.restart(name)
    stack.wait_ready()
    time.sleep(2.0)  # beat ticking, the worker beating and consuming


def stop_times(stack: Stack, names: tuple[str, ...] = ("beat", "worker")) -> dict[str, float]:
    """SIGTERM each process (at once) and the seconds each takes to exit (SIGKILL, and
    infinity, past 30 s)."""
    procs = {name: stack.processes[name] for name in names}
    began = time.monotonic()
    for proc in procs.values():
        os.killpg(proc.pid, signal.SIGTERM)
    took: dict[str, float] = {}
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(0.1, 30 - (time.monotonic() - began)))
            took[name] = time.monotonic() - began
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            took[name] = float("inf")
    return took


def test_worker_and_beat_stop_within_10_s_while_redis_is_stopped(small) -> None:  # type: ignore[no-untyped-def]
    fresh(small)
    small.stop_redis()
    time.sleep(3.0)  # both are riding the outage out: reconnecting, retrying
    took = stop_times(small)
    print(f"\nRedis stopped: SIGTERM -> exit {took}")
    assert all(t <= STOP_BOUND for t in took.values()), took
    assert small.processes["beat"].returncode == 0  # a clean stop, not a crash
    assert small.processes["worker"].returncode == 0


def test_worker_and_beat_stop_within_10_s_while_redis_does_not_answer(small) -> None:  # type: ignore[no-untyped-def]
    """Redis frozen (SIGSTOP): connections are accepted, nothing is answered, as with a
    host that is cut off. Every call waits for its timeout: the stop must not."""
    fresh(small)
    pid = redis_pid(small)
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(3.0)
        took = stop_times(small)
    finally:
        os.kill(pid, signal.SIGCONT)
    print(f"\nRedis not answering: SIGTERM -> exit {took}")
    assert all(t <= STOP_BOUND for t in took.values()), took
    assert small.processes["beat"].returncode == 0
    assert small.processes["worker"].returncode == 0


def test_beat_started_while_redis_is_down_stops_within_10_s(small) -> None:  # type: ignore[no-untyped-def]
    fresh(small)
    small.kill("beat", signal.SIGTERM)
    small.stop_redis()
    log = small.data_dir / "logs" / "beat.log"
    waits = log.read_text(errors="replace").count("Redis unavailable at start")
    small.restart("beat")  # starts with Redis down: waits for it

    def waiting() -> bool:
        return log.read_text(errors="replace").count("Redis unavailable at start") > waits

    wait_for(waiting, timeout=30, every=0.2)
    time.sleep(2.0)
    assert small.processes["beat"].poll() is None  # waiting, not crashed
    took = stop_times(small, ("beat",))
    print(f"\nbeat started with Redis down: SIGTERM -> exit {took}")
    assert took["beat"] <= STOP_BOUND, took
    assert small.processes["beat"].returncode == 0


def test_beat_started_while_redis_is_down_carries_on_once_it_is_back(small) -> None:  # type: ignore[no-untyped-def]
    fresh(small)
    small.kill("beat", signal.SIGTERM)
    small.stop_redis()
    log = small.data_dir / "logs" / "beat.log"
    before = log.read_text(errors="replace").count("Sending due task smsq-tick")
    small.restart("beat")
    time.sleep(3.0)
    small.start_redis()

    def ticking() -> bool:
        return log.read_text(errors="replace").count("Sending due task smsq-tick") > before + 3

    wait_for(ticking, timeout=30, every=0.5)
    assert small.processes["beat"].poll() is None
