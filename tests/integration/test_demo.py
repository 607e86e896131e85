"""`make demo`, the README's first command: `smsq demo` in a fresh directory, nothing
exported, exits 0 with every message at the status the sandbox decided, shows the
balance alert it sets up, and leaves no process running (every process it starts
works in its directory: none is left there afterwards)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from producer.embedded_redis import running_url
from tests.integration.conftest import SMSQ, clean_env, processes_in

pytestmark = pytest.mark.integration


def test_smsq_demo_runs_the_tour_and_stops_everything(tmp_path: Path) -> None:
    demo = subprocess.run(
        [*SMSQ, "demo"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=240
    )
    out = demo.stdout + demo.stderr
    assert demo.returncode == 0, out[-3000:]
    assert "every message reached the status the sandbox decided" in out
    for provider in ("keccel", "smsclub", "kingsms", "sms1601"):
        assert f"│ {provider}" in out, provider  # in the final table
    assert "balance alert expiring: keccel" in out
    assert "stopping every process the demo started" in out
    assert running_url(tmp_path / "var") is None  # its Redis stopped with it
    assert [" ".join(p.cmdline()) for p in processes_in(tmp_path)] == []
