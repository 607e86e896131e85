"""The priority rows of `make bench`: one-time codes sent while a campaign saturates
a gateway account's rate limit (issue 16).

A backlog (SMSClub: 20,000 recipients, 100 a request; Keccel: 2,000 single
messages) is queued at `bulk` priority with the account limited to 9 requests/s;
once it is going, 50 `high` messages are sent, one every 0.25 s. Printed: their
`send_sms` -> gateway time (p50, p99, from the simulator's book), and how the rate
was used meanwhile (every request, then the campaign's own part). What is left of
the campaign afterwards is cancelled, so the bench does not wait for it.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import update

from producer import db, send_bulk, send_sms
from producer.models import Message
from worker.gateways.sandbox.base import ProviderSim, max_in_window

RATE = 9
N_CODES = 50
CODE_EVERY = 0.25


@dataclass
class PriorityRun:
    provider: str
    backlog: int
    p50_ms: float
    p99_ms: float
    worst_per_second: int
    used: float  # requests in the codes' span / (R x span)
    backlog_used: float  # the campaign's requests alone


def _number(prefix: str, i: int) -> str:
    return f"{prefix}{100_000 + i}{1 + i % 7}"  # last digit 1-7: the sandbox delivers it


def run(
    provider: str,
    sim: ProviderSim,
    backlog: int,
    prefix: str,
    code_prefix: str,
    wait_until: Callable[..., None],
) -> PriorityRun:
    """`backlog` bulk messages, then N_CODES high ones during it; the stack's workers
    must already run with `SMSQ_<PROVIDER>_RATE_LIMIT=RATE`."""
    tag = uuid.uuid4().hex[:6]
    campaign = f"campaign {tag}"
    started = time.time()
    ids = send_bulk([_number(prefix, i) for i in range(backlog)], campaign, provider=provider)
    wait_until(lambda: sum(1 for r in list(sim.requests) if r.at >= started) >= 2 * RATE, 60)
    sent_at: dict[str, float] = {}
    for n in range(N_CODES):
        text = f"code {tag} {n}"
        send_sms(_number(code_prefix, n), text, provider=provider, priority="high")
        sent_at[text] = time.time()
        time.sleep(CODE_EVERY)

    def book() -> dict[str, float]:
        return {m.text: m.created for m in list(sim.messages.values()) if m.text in sent_at}

    wait_until(lambda: len(book()) == N_CODES, 60)
    arrived = book()
    waits = sorted(arrived[t] - sent_at[t] for t in sent_at)
    first, last = min(sent_at.values()), max(arrived.values())
    span = [r for r in list(sim.requests) if first <= r.at <= last]
    code_requests = sum(1 for t in arrived.values() if first <= t <= last)
    _drop_rest(ids)
    capacity = RATE * (last - first)
    return PriorityRun(
        provider=provider,
        backlog=backlog,
        p50_ms=statistics.median(waits) * 1000,
        p99_ms=waits[min(len(waits) - 1, int(len(waits) * 0.99))] * 1000,
        worst_per_second=max_in_window([r.at for r in sim.requests if r.at >= started]),
        used=len(span) / capacity,
        backlog_used=(len(span) - code_requests) / capacity,
    )


def _drop_rest(ids: list[str]) -> None:
    """The rest of the campaign is not needed: its queued rows fail in one statement
    (a bench shortcut past `cancel`, which takes one message at a time); their queued
    tasks then claim nothing."""
    with db.session() as s:
        for start in range(0, len(ids), 5000):
            s.execute(
                update(Message)
                .where(Message.id.in_(ids[start : start + 5000]), Message.status == "queued")  # type: ignore[union-attr]
                .values(status="failed", error="cancelled by the benchmark")
            )
        s.commit()


def rows(result: PriorityRun) -> list[tuple[str, str, str, str]]:
    """Rows for bench/run.py's table."""
    unit = "recipients" if result.provider == "smsclub" else "singles"
    head = f"{N_CODES} high, {result.provider} backlog {result.backlog} {unit} at {RATE}/s"
    return [
        (f"{head}: p50", f"{result.p50_ms:8.0f} ms", "", "~ 1 slot + latency"),
        (f"{head}: p99", f"{result.p99_ms:8.0f} ms", "", ""),
        (
            f"{head}: R used (backlog)",
            f"max {result.worst_per_second} in any 1 s",
            f"{result.used:5.1%} ({result.backlog_used:.0%})",
            f"<= {RATE}; >= 95%",
        ),
    ]
