"""How many delivery-status requests smsq makes per message that reaches a final status.

Runs the embedded stack (real Redis, worker, beat, web, simulators over HTTP)
with the DEFAULT poll schedule (`30,60,120,...`) and gateways that take
`--delivery-seconds` (45 by default) to deliver, sends `--messages` messages
each through SMSClub (bulk, 100 numbers a request, statuses asked 100 ids a
request) and Keccel (one id per status request, as its API allows), waits for
every one to be final, and prints the status requests counted at the
simulators per final message. Issue 4's goals: SMSClub ≤ 0.05, Keccel ≤ 2.

    .venv/bin/python bench/status_requests.py [--messages 1000] [--delivery-seconds 45]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlmodel import func, select

from producer import db, send_bulk, send_sms
from producer.models import Message
from producer.status import TERMINAL
from worker.ops.stack import Stack

STATUS_PATHS = {"smsclub": "/sms/status", "keccel": "/delivery.asp"}


def _final_count(ids: list[str]) -> int:
    finals = [s.value for s in TERMINAL]
    total = 0
    with db.session() as s:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            total += s.exec(
                select(func.count()).where(
                    Message.id.in_(chunk),  # type: ignore[union-attr]
                    Message.status.in_(finals),  # type: ignore[attr-defined]
                )
            ).one()
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--delivery-seconds", type=float, default=45.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("SMSQ_")]:
        del os.environ[key]
    env = {
        "SMSQ_POLL_SCHEDULE": "30,60,120,300,600,1800,3600",  # the default
        "SMSQ_TICK_SECONDS": "2",
        "SMSQ_KECCEL_DLR_MODE": "pull",
        "SMSQ_SMSCLUB_DLR_MODE": "pull",
        "SMSQ_LOG_LEVEL": "WARNING",
    }
    with tempfile.TemporaryDirectory(prefix="smsq-bench-") as tmp:
        stack = Stack(
            data_dir=Path(tmp),
            delivery_seconds=args.delivery_seconds,
            worker_concurrency=8,
            extra_env=env,
        )
        stack.start()
        try:
            assert stack.sandbox is not None
            sims = stack.sandbox.sandbox.sims
            started = time.monotonic()
            ids: dict[str, list[str]] = {"smsclub": [], "keccel": []}
            numbers = [f"38098{i:06d}1" for i in range(args.messages)]
            for start in range(0, len(numbers), 100):
                ids["smsclub"] += send_bulk(
                    numbers[start : start + 100], "bench", provider="smsclub"
                )
            for i in range(args.messages):
                ids["keccel"].append(send_sms(f"24385{i:06d}1", "bench", provider="keccel"))
            print(f"queued {args.messages} + {args.messages} messages", flush=True)
            deadline = started + args.timeout
            while time.monotonic() < deadline:
                done = {p: _final_count(v) for p, v in ids.items()}
                print(
                    f"  {time.monotonic() - started:5.0f}s final: "
                    + ", ".join(f"{p} {n}/{args.messages}" for p, n in done.items()),
                    flush=True,
                )
                if all(n == args.messages for n in done.values()):
                    break
                time.sleep(10)
            elapsed = time.monotonic() - started
            print()
            print(
                f"status requests per final message, delivery {args.delivery_seconds:.0f}s, "
                f"default poll schedule, {args.messages} messages each ({elapsed:.0f}s):"
            )
            print(f"{'provider':<10}{'final':>8}{'requests':>10}{'ids asked':>11}{'per final':>11}")
            for provider, path in STATUS_PATHS.items():
                polls = [r for r in sims[provider].requests if r.path.endswith(path)]
                asked = sum(r.recipients or 1 for r in polls)
                final = _final_count(ids[provider])
                per = len(polls) / final if final else float("nan")
                print(f"{provider:<10}{final:>8}{len(polls):>10}{asked:>11}{per:>11.3f}")
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
