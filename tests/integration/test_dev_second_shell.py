"""`make dev` is usable from a second shell (issue 14, point 5): `smsq dev` leaves
`stack.env` under its data dir, so `smsq send` and `smsq status` in another
process, with no SMSQ_* exported, reach its broker and sandbox; Ctrl-C removes
the file and stops every process it started (no Redis left behind). The embedded
Redis has a password of its own, carried by stack.env; a client without it is
refused, and no log (Flower's included) shows it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

import psutil
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from producer.embedded_redis import running_url
from tests.integration.conftest import SMSQ, clean_env, processes_in

pytestmark = pytest.mark.integration


def smsq(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SMSQ, *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=60
    )


def _broker_of(stack_env: Path) -> SplitResult:
    line = next(x for x in stack_env.read_text().splitlines() if x.startswith("SMSQ_BROKER_URL="))
    return urlsplit(line.partition("=")[2])


def test_a_second_shell_sends_through_a_running_dev_stack(tmp_path: Path) -> None:
    env = {**clean_env(), "SMSQ_FLOWER_BASIC_AUTH": "admin:test-dev"}
    dev = subprocess.Popen(
        [*SMSQ, "dev"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    stack_env = tmp_path / "var" / "stack.env"
    try:
        deadline = time.monotonic() + 90
        while not stack_env.exists():
            assert dev.poll() is None, dev.stdout.read() if dev.stdout else ""
            assert time.monotonic() < deadline, "smsq dev did not come up"
            time.sleep(0.2)
        assert oct(stack_env.stat().st_mode & 0o777) == "0o600"
        broker = _broker_of(stack_env)
        assert broker.password, "the embedded Redis has a password, in stack.env for a second shell"
        bare = redis.Redis(host=broker.hostname, port=broker.port, retry=Retry(NoBackoff(), 0))
        with pytest.raises(redis.AuthenticationError):
            bare.ping()
        bare.close()
        sent = smsq(
            tmp_path, "send", "--to", "243851234567", "--text", "Hello", "--provider", "keccel"
        )
        assert sent.returncode == 0, sent.stderr
        mid = re.search(r"[0-9a-f]{32}", sent.stdout)
        assert mid is not None, sent.stdout
        deadline = time.monotonic() + 60
        while True:
            shown = smsq(tmp_path, "status", mid.group(0), "--json")
            if '"delivered"' in shown.stdout:
                break
            assert time.monotonic() < deadline, shown.stdout + shown.stderr
            time.sleep(1)
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            for proc in processes_in(tmp_path):  # a stack left running slows later tests
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            raise
    assert not stack_env.exists()
    logs = tmp_path / "var" / "logs"
    assert (logs / "flower.log").exists()
    assert [p.name for p in logs.glob("*.log") if broker.password in p.read_text()] == []
    assert running_url(tmp_path / "var") is None  # the embedded Redis stopped with it
    # Without the stack, a second shell no longer reaches a sandbox it cannot see.
    late = smsq(tmp_path, "send", "--to", "243851234567", "--text", "Hi", "--provider", "keccel")
    assert late.returncode != 0 and "not configured" in late.stderr
