"""The stop watchdog: a process asked to stop exits by itself once the bound has passed
and no task of its own is running (a real subprocess, blocked as a worker whose
broker does not answer is)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

BLOCKED = """
import sys, threading, time
from worker.ops import shutdown
if sys.argv[1] == "task":
    shutdown.task_started()
    threading.Timer(1.5, shutdown.task_ended).start()  # the send ends 1.5 s after the stop
shutdown.arm("test", seconds=0.5)
shutdown.arm("test", seconds=60)  # armed once: a second stop request changes nothing
threading.Event().wait()  # the main thread never returns (a goodbye to a dead broker)
"""


def run(mode: str) -> tuple[int, float, str]:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.returncode, time.monotonic() - began, done.stderr


def test_a_blocked_process_exits_once_the_bound_has_passed() -> None:
    code, took, _err = run("idle")
    assert code == 0
    assert took < 5.0  # 0.5 s plus the interpreter's start


def test_a_running_task_is_waited_for_before_the_exit() -> None:
    code, took, _err = run("task")
    assert code == 0
    assert took >= 1.5  # not at the 0.5 s bound: the task ended at 1.5 s
