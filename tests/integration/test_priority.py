"""Priorities where the rate limit binds, on a real stack: two worker processes (as on
two hosts) share SMSClub's 9 requests/s while a bulk campaign saturates it; one-time
codes (`high`) and `normal` messages sent meanwhile reach the gateway within a slot or
two, not behind the campaign, and the limit is never exceeded.

Times are taken at the simulator (when its book got the message) against when
`send_sms` returned. Without priorities a code waits for the whole backlog ahead of
it (here several seconds); the bounds below are a few slots, loose for a loaded CI
machine, far from that. `make bench` prints the measured figures.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlmodel import func, select

from producer import db, send_bulk, send_sms
from producer.models import Message
from tests.integration.conftest import running_stack, sim, wait_for
from worker.gateways.sandbox.base import max_in_window
from worker.ops.stack import Stack

pytestmark = pytest.mark.integration

RATE = 9
BACKLOG = 9_000  # 90 requests of 100: 10 s at 9/s
PRIORITY_ENV = {
    "SMSQ_SMSCLUB_RATE_LIMIT": str(RATE),
    "SMSQ_TICK_SECONDS": "0.5",
    "SMSQ_POLL_SCHEDULE": "30",  # polls play no part here
    "SMSQ_SWEEP_AFTER_SECONDS": "60",
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("priority"),
        delivery_seconds=0.5,
        worker_concurrency=4,
        workers=2,
        web=False,
        extra_env=PRIORITY_ENV,
    ) as running:
        yield running


def _sent(ids: list[str]) -> int:
    with db.session() as s:
        query = select(func.count()).where(
            Message.id.in_(ids),  # type: ignore[union-attr]
            Message.status.in_(("sent", "delivered")),  # type: ignore[attr-defined]
        )
        return int(s.exec(query).one())


def _arrivals(stack: Stack, texts: dict[str, float]) -> dict[str, float]:
    """Seconds from `send_sms` returning to the gateway's book holding each text."""
    book = {m.text: m.created for m in list(sim(stack, "smsclub").messages.values())}
    return {text: book[text] - returned for text, returned in texts.items() if text in book}


def test_high_and_normal_messages_overtake_a_bulk_backlog_at_the_rate_limit(limited) -> None:  # type: ignore[no-untyped-def]
    run = uuid.uuid4().hex[:6]
    numbers = [f"38099{100_000 + i}{1 + i % 7}" for i in range(BACKLOG)]  # none rejected
    started = time.time()
    backlog = send_bulk(numbers, f"campaign {run}", provider="smsclub")
    wait_for(lambda: _sent(backlog) >= 900, timeout=30, every=0.05)  # saturated
    high: dict[str, float] = {}
    normal: dict[str, float] = {}
    for n in range(10):
        text = f"code {run} {n}"
        send_sms(f"380671234{n:02d}1", text, provider="smsclub", priority="high")
        high[text] = time.time()
        if n % 3 == 0:
            text = f"notice {run} {n}"
            send_sms(f"380631234{n:02d}1", text, provider="smsclub")
            normal[text] = time.time()
        time.sleep(0.4)
    codes_done = time.time()
    wait_for(lambda: len(_arrivals(limited, high | normal)) == len(high) + len(normal), 20)
    backlog_left = len(backlog) - _sent(backlog)
    wait_for(lambda: _sent(backlog) == len(backlog), timeout=60, every=0.2)

    high_waits = sorted(_arrivals(limited, high).values())
    normal_waits = sorted(_arrivals(limited, normal).values())
    requests = [r.at for r in list(sim(limited, "smsclub").requests) if r.at >= started]
    print(
        f"\nhigh p50 {statistics.median(high_waits) * 1000:.0f} ms, "
        f"max {high_waits[-1] * 1000:.0f} ms; normal max {normal_waits[-1] * 1000:.0f} ms; "
        f"{backlog_left} backlog recipients still queued when the codes were in"
    )
    assert backlog_left >= 2_000, "the backlog (>= 2.2 s of it) must still be behind the codes"
    slot = 1 / RATE
    assert statistics.median(high_waits) <= 4 * slot + 0.2, high_waits
    assert high_waits[-1] <= 1.5, high_waits  # behind the backlog: >= 2.2 s
    assert normal_waits[-1] <= 1.5, normal_waits
    assert max_in_window(requests) <= RATE
    # The rate was used while the codes went: every request there counts (codes too).
    first = min(requests)
    busy = [t for t in requests if first + 1 <= t <= codes_done]
    share = len(busy) / (RATE * (codes_done - first - 1))
    print(f"{share:.1%} of R used from the first second of the backlog to the last code")
    assert share >= 0.9, share
