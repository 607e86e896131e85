"""`smsq dev` stops its stack on Ctrl-C (SIGINT) and on SIGTERM (honcho, systemd,
`timeout`), with threads of its own running, as the sandbox's is; `smsq demo`
stops its stack on SIGTERM too. Run in a child process with the stack replaced by
a recorder: the signal handling is what is tested, not the processes (that is
tests/integration/test_dev_second_shell.py and the demo's own test)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

CHILD = """
import sys, threading, time
from pathlib import Path
import worker.ops.stack as stack_module

class Sandbox:
    url = "http://127.0.0.1:1"

class RecordingStack:
    def __init__(self, data_dir, flower):
        self.data_dir, self.web_url, self.sandbox = Path(data_dir), "http://127.0.0.1:2", None
    def start(self):
        self.sandbox = Sandbox()
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()  # as the sandbox
    def publish_env(self):
        path = self.data_dir / "stack.env"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("SMSQ_BROKER_URL=x")
        return path
    def stop(self):
        print("stack stopped", flush=True)

stack_module.Stack = RecordingStack
from worker.ops.cli import main
sys.exit(main(["dev"]))
"""


def signal_once_up(
    code: str,
    marker: str,
    sig: int,
    env: dict[str, str] | None = None,
    check: Callable[[], None] = lambda: None,
) -> tuple[int, str, str]:
    """Run `code` in a child Python, send it `sig` once a line holding `marker` is
    printed (`check` called just before), and wait for it (10 s at most): its exit
    code, what it printed up to the marker, and what it printed after."""
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert child.stdout is not None
    seen: list[str] = []
    try:
        for line in child.stdout:
            seen.append(line)
            if marker in line:
                break
        check()
        child.send_signal(sig)
        rest, _ = child.communicate(timeout=10)
    finally:
        child.kill()
    return child.returncode, "".join(seen), rest


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_smsq_dev_stops_its_stack_and_exits_on_a_signal(tmp_path: Path, sig: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")}
    env["SMSQ_DATA_DIR"] = str(tmp_path / "var")
    stack_env = tmp_path / "var" / "stack.env"
    published: list[bool] = []
    returncode, seen, rest = signal_once_up(
        CHILD, "Ctrl-C to stop", sig, env, lambda: published.append(stack_env.exists())
    )
    assert published == [True], seen  # the stack was up when the signal came
    assert returncode == 0, seen + rest
    assert "stack stopped" in rest
    assert not stack_env.exists()


DEMO_CHILD = """
import sys, time
import worker.ops.demo as demo

class SlowStack:
    def __init__(self, data_dir, delivery_seconds):
        pass
    def start(self):
        print("starting", flush=True)
        time.sleep(60)  # the signal comes while the stack starts
    def stop(self):
        print("stack stopped", flush=True)

demo.Stack = SlowStack
sys.exit(demo.run_demo(None))
"""


def test_smsq_demo_stops_its_stack_on_sigterm() -> None:
    returncode, seen, rest = signal_once_up(DEMO_CHILD, "starting", signal.SIGTERM)
    assert returncode == 128 + signal.SIGTERM, seen + rest
    assert "stack stopped" in rest
