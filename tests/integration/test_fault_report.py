"""The fault suite's report (`make faults`, bench/faults.py) runs and adds up.

A small run of two faults, on its own stack in a subprocess, exactly as a user
runs the script: it exits 0 only when nothing was lost or sent twice, and its
table has one row per fault whose counts agree with each other.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 40


def test_the_fault_report_prints_one_consistent_row_per_fault() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")}
    done = subprocess.run(
        [
            sys.executable,
            "bench/faults.py",
            "--messages",
            str(MESSAGES),
            "--store",
            "sqlite",
            "--only",
            "bursts_429",
            "store_locked",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout.splitlines()
    lines = out[[i for i, line in enumerate(out) if line.startswith("$ python")][-1] :]
    [header] = [line for line in lines if line.startswith("store ")]
    columns = [c.strip() for c in header.split("|")]
    assert columns[:8] == [
        "store",
        "fault",
        "messages",
        "delivered",
        "final other",
        "sent, no report",
        "lost",
        "duplicated",
    ]
    rows = [
        dict(zip(columns, (c.strip() for c in line.split("|")), strict=True))
        for line in lines
        if line.startswith("sqlite ")
    ]
    assert [r["fault"] for r in rows] == ["429 bursts with Retry-After", "store locked 5 s"]
    for row in rows:
        assert row["messages"] == str(MESSAGES)
        final = int(row["delivered"]) + int(row["final other"]) + int(row["sent, no report"])
        assert final == MESSAGES
        assert (row["lost"], row["duplicated"]) == ("0", "0")
        seen, limit = (int(x) for x in row["max req/s seen vs limit"].split(" / "))
        assert 0 < seen <= limit
        recovery = float(row["fault -> last final"].removesuffix(" s"))
        whole = float(row["time"].removesuffix(" s"))
        assert 0 < recovery <= whole  # the fault began after the first send_sms
        assert float(row["p99 send delay, caught"].removesuffix(" s")) > 0
    assert any("send requests at the gateway" in line for line in lines)
