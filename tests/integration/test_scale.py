"""Sending at scale: several workers and beats against one Redis, with faults.

Its own stack (not the package fixture): three worker processes with their own
node names (as on three hosts), two beat processes, SMSClub limited to 9
requests/s. Every count is taken at the simulator: requests per sliding second
from its request log, messages from its book (one unique text per message).
No wall-clock asserts; the utilisation is printed (`make bench` reports it).
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from sqlmodel import func, select

from producer import EnqueueError, db, get_status, send_sms
from producer.enqueue import publisher
from producer.models import Message, MessageEvent
from producer.settings import reload_settings
from producer.status import Status
from tests.integration.conftest import book, running_stack, sim, wait_for
from worker.gateways.sandbox.base import Fault, max_in_window
from worker.ops.stack import Stack

pytestmark = pytest.mark.integration

RATE = 9
SENT_OR_LATER = {"sent", "delivered", "undelivered", "expired"}
SCALE_ENV = {
    "SMSQ_SMSCLUB_RATE_LIMIT": str(RATE),
    "SMSQ_TICK_SECONDS": "0.5",
    "SMSQ_POLL_SCHEDULE": "1,2,5,30",
    "SMSQ_RETRY_BASE_SECONDS": "0.2",
    "SMSQ_RETRY_CAP_SECONDS": "1",
    "SMSQ_SWEEP_AFTER_SECONDS": "20",
}


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("scale"),
        delivery_seconds=0.5,
        worker_concurrency=2,
        workers=3,
        beats=2,
        web=False,
        extra_env=SCALE_ENV,
    ) as running:
        yield running


def statuses(ids: list[str]) -> Counter[str]:
    with db.session() as s:
        rows = s.exec(select(Message.status).where(Message.id.in_(ids))).all()  # type: ignore[union-attr]
    return Counter(rows)


def wait_all(ids: list[str], wanted: set[str], timeout: float) -> None:
    def done() -> bool:
        return sum(n for st, n in statuses(ids).items() if st in wanted) == len(ids)

    try:
        wait_for(done, timeout=timeout, every=0.5)
    except AssertionError:
        raise AssertionError(f"after {timeout}s: {dict(statuses(ids))}") from None


def sends_per_worker() -> dict[str, int]:
    stats = publisher().control.inspect(timeout=2.0).stats() or {}
    return {node: info.get("total", {}).get("smsq.send", 0) for node, info in stats.items()}


def still_sending(ids: list[str]) -> list[str]:
    with db.session() as s:
        return list(
            s.exec(
                select(Message.id).where(
                    Message.id.in_(ids),  # type: ignore[union-attr]
                    Message.status == Status.SENDING.value,
                )
            ).all()
        )


def events(mid: str, kind: str) -> list[MessageEvent]:
    with db.session() as s:
        query = select(MessageEvent).where(
            MessageEvent.message_id == mid, MessageEvent.kind == kind
        )
        return list(s.exec(query.order_by(MessageEvent.id)))  # type: ignore[arg-type]


def send_many(provider: str, numbers: Callable[[int], str], n: int, tag: str) -> tuple:  # type: ignore[type-arg]
    texts = [f"{tag} {uuid.uuid4().hex[:8]} #{i}" for i in range(n)]
    ids = [send_sms(numbers(i), text, provider=provider) for i, text in enumerate(texts)]
    return ids, texts


def smsclub_number(i: int) -> str:
    return f"380671{i:05d}{1 + i % 7}"[:12]


def sms1601_number(i: int) -> str:
    return f"3161{i:06d}{1 + i % 7}"


def test_rate_limit_holds_across_worker_processes_and_every_message_goes_once(scale) -> None:  # type: ignore[no-untyped-def]
    """200 SMSClub single sends through three worker processes sharing one limit of
    9/s: no sliding second at the gateway sees more than 9 requests, every message
    is in the gateway's book exactly once, and every worker took part."""
    before = sends_per_worker()
    started = time.time()
    ids, texts = send_many("smsclub", smsclub_number, 200, "rate")
    wait_all(ids, SENT_OR_LATER, timeout=120)
    after = sends_per_worker()

    requests = [r.at for r in list(sim(scale, "smsclub").requests) if r.path.endswith("/sms/send")]
    requests = [t for t in requests if t >= started]
    assert len(requests) == 200  # one request per single send, none repeated
    assert max_in_window(requests) <= RATE
    assert book(scale, "smsclub", texts) == Counter({t: 1 for t in texts})
    worked = {node: after.get(node, 0) - before.get(node, 0) for node in after}
    assert len(worked) == 3 and all(n > 0 for n in worked.values()), worked
    whole = int(max(requests) - min(requests))
    per_second = sum(1 for t in requests if t < min(requests) + whole) / whole
    print(
        f"\n200 sends, max {max_in_window(requests)} in any second (limit {RATE}), "
        f"{per_second:.2f} req/s = {per_second / RATE:.0%} of the limit over {whole} s; "
        f"sends per worker {worked}"
    )


def test_sigkill_of_a_worker_with_sends_in_flight_loses_and_doubles_nothing(scale) -> None:  # type: ignore[no-untyped-def]
    """Every worker thread holds a slow 1601SMS send when one worker is SIGKILLed;
    the rest of the run goes on. The dead worker's two sends reached the gateway
    but their answers were never stored: its heartbeat stops, and beat settles
    them by itself within about a minute of their claim, under the
    default SMSQ_UNCERTAIN_SEND=reconcile: a lookup by our reference, recorded
    as a `reconcile` event, finds them (the held requests were taken at once,
    only their answers were late), so none is sent again. All 40 messages end
    up sent, each exactly once in the gateway's book."""
    gateway = sim(scale, "sms1601")
    threads = scale.workers * scale.worker_concurrency
    gateway.add_fault(Fault(delay=3.0, passthrough=True, times=threads))
    started = time.time()
    ids, texts = send_many("sms1601", sms1601_number, 40, "kill")

    def all_threads_in_flight() -> bool:
        arrived = [r for r in list(gateway.requests) if r.at >= started]
        return len(arrived) >= threads and statuses(ids).get("sending", 0) == threads

    wait_for(all_threads_in_flight, timeout=30)
    scale.kill("w1")
    killed = time.monotonic()
    held = scale.worker_concurrency  # the dead worker's sends, one per thread
    try:

        def all_but_the_dead_workers_sent() -> bool:
            count = statuses(ids)
            return sum(count[s] for s in SENT_OR_LATER) == len(ids) - held

        wait_for(all_but_the_dead_workers_sent, timeout=40, every=0.5)
        stuck = still_sending(ids)
        assert len(stuck) == held  # nothing else is left behind
        wait_all(ids, SENT_OR_LATER, timeout=120)  # beat settles them, nobody ages them
        settled_after = time.monotonic() - killed
    finally:
        scale.restart("w1")
    assert book(scale, "sms1601", texts) == Counter({t: 1 for t in texts})
    for mid in stuck:
        [reconciled] = events(mid, "reconcile")
        assert reconciled.source == "beat"
        assert (reconciled.note or "").startswith(
            "uncertain send (worker lost mid-send): sms1601 lookup: found"
        ), reconciled.note
    print(f"\nthe dead worker's {held} sends settled by beat {settled_after:.0f} s after the kill")


def _due_sends(log_text: str) -> int:
    return log_text.count("Sending due task smsq-tick")


def test_two_beats_one_active_and_the_other_takes_over(scale) -> None:  # type: ignore[no-untyped-def]
    """Two beat processes share redbeat's lock: only one sends the tick; when it is
    SIGKILLed, the other takes over and the tick goes on, still from one beat."""
    logs = scale.data_dir / "logs"

    def counts() -> dict[str, int]:
        return {b: _due_sends((logs / f"{b}.log").read_text()) for b in scale.beat_names}

    first = counts()
    time.sleep(3.0)  # several tick periods (0.5 s)
    second = counts()
    grew = [b for b in scale.beat_names if second[b] > first[b]]
    assert len(grew) == 1, second  # exactly one beat sends the tick
    [active] = grew
    [standby] = [b for b in scale.beat_names if b != active]
    assert second[standby] == 0

    scale.kill(active)
    try:
        wait_for(lambda: counts()[standby] > 0, timeout=60, every=0.5)
        taken_over = counts()[standby]
        time.sleep(2.0)
        assert counts()[standby] > taken_over  # it keeps ticking
        text = f"after failover {uuid.uuid4().hex[:8]}"
        mid = send_sms("243851230001", text, provider="keccel")
        wait_all([mid], SENT_OR_LATER, timeout=30)
    finally:
        scale.restart(active)


def test_redis_restart_mid_run_loses_and_doubles_nothing(scale) -> None:  # type: ignore[no-untyped-def]
    """Redis (AOF on) stops while 60 SMSClub sends are queued at 9/s and starts again.
    Meanwhile a send_sms keeps its row (the default) and one with
    SMSQ_ENQUEUE_FAILURE=raise raises EnqueueError and keeps nothing. Afterwards
    every message, the kept one too, is in the gateway's book exactly once."""
    smsclub = sim(scale, "smsclub")
    started = time.time()
    ids, texts = send_many("smsclub", lambda i: smsclub_number(i + 400), 60, "outage")
    wait_for(lambda: sum(1 for r in list(smsclub.requests) if r.at >= started) >= 15, timeout=30)
    scale.stop_redis()
    try:
        kept_text = f"kept {uuid.uuid4().hex[:8]}"
        kept = send_sms("380671999991", kept_text, provider="smsclub")
        assert get_status(kept) is not None

        os.environ["SMSQ_ENQUEUE_FAILURE"] = "raise"
        reload_settings()
        with db.session() as s:
            rows_before = s.exec(select(func.count()).select_from(Message)).one()
        with pytest.raises(EnqueueError):
            send_sms("380671999992", f"refused {uuid.uuid4().hex[:8]}", provider="smsclub")
        with db.session() as s:
            assert s.exec(select(func.count()).select_from(Message)).one() == rows_before
        time.sleep(3)  # beat meets the outage (its tick runs every 0.5 s here)
    finally:
        os.environ.pop("SMSQ_ENQUEUE_FAILURE", None)
        reload_settings()
        scale.start_redis()
    # Workers reconnect by themselves, and so does beat (worker.beat.SmsqScheduler):
    # no process exited, and the ticks go on after the outage.
    assert scale.revive() == {}
    logs = scale.data_dir / "logs"
    ticks_before = {b: _due_sends((logs / f"{b}.log").read_text()) for b in scale.beat_names}
    wait_for(
        lambda: any(
            _due_sends((logs / f"{b}.log").read_text()) > ticks_before[b] for b in scale.beat_names
        ),
        timeout=40,
    )

    everything = [*ids, kept]
    wait_all(everything, SENT_OR_LATER, timeout=120)
    assert book(scale, "smsclub", [*texts, kept_text]) == Counter(
        {t: 1 for t in [*texts, kept_text]}
    )
    after = [
        r.at for r in list(smsclub.requests) if r.at >= started and r.path.endswith("/sms/send")
    ]
    assert max_in_window(after) <= RATE
