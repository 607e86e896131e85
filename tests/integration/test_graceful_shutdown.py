"""SIGTERM (what systemd, Docker, Kubernetes and honcho send) lets the worker finish
the sends it has started, stores their answers, hands back what it had not
started, and exits: nothing lost, nothing sent twice.

Runs late in the package (it stops and restarts the shared worker).
"""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from producer import db, get_status, send_sms
from producer.models import Message
from producer.status import Status
from tests.integration.conftest import wait_for, wait_status
from worker.gateways.sandbox.base import Fault

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
