"""The real stack for integration tests: embedded Redis, a Celery worker and beat as
subprocesses, the web process, and the gateway simulators over loopback.

Package-scoped: started once for tests/integration, stopped (and the
environment restored) when the package is done.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from producer import get_status
from producer.status import Status
from worker.gateways.sandbox.base import ProviderSim
from worker.ops.stack import Stack, reset_process_state

TEST_ENV = {
    "SMSQ_POLL_SCHEDULE": "0.3,0.3,0.5,1,1,2,5",
    "SMSQ_TICK_SECONDS": "0.5",
    "SMSQ_RETRY_BASE_SECONDS": "0.2",
    "SMSQ_RETRY_CAP_SECONDS": "1",
    "SMSQ_SWEEP_AFTER_SECONDS": "30",
    "SMSQ_SMS1601_OUTBOX_SCHEDULING": "true",
    # Circuit breaker: three failures in a row open it, for three seconds (test_resilience).
    "SMSQ_BREAKER_FAILURES": "3",
    "SMSQ_BREAKER_COOLDOWN_SECONDS": "3",
    # Delivery tracking modes: KING SMS PRO pushes to its per-message URL; Keccel
    # and 1601SMS wait for a push (their sims push only once a test sets the
    # account callback URL) and fall back to polling after the grace period.
    "SMSQ_KINGSMS_DLR_MODE": "push",
    "SMSQ_KECCEL_DLR_MODE": "both",
    "SMSQ_SMS1601_DLR_MODE": "both",
    "SMSQ_PUSH_GRACE_SECONDS": "1.5",
    # The app-callback tests' receiver listens on loopback.
    "SMSQ_CALLBACK_ALLOW_PRIVATE": "true",
}


@contextmanager
def running_stack(data_dir: Path, **options: Any) -> Iterator[Stack]:
    """A Stack started in a clean SMSQ_* environment, stopped and the environment
    (and this process's cached settings, broker and store) restored afterwards."""
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("SMSQ_"):
            del os.environ[key]
    reset_process_state()
    running = Stack(data_dir=data_dir, **options)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        os.environ.clear()
        os.environ.update(saved)
        reset_process_state()


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("smsq"),
        delivery_seconds=0.5,
        worker_concurrency=4,
        extra_env=TEST_ENV,
    ) as running:
        yield running


@pytest.fixture
def sims(stack: Stack):  # type: ignore[no-untyped-def]
    assert stack.sandbox is not None
    sims = stack.sandbox.sandbox.sims
    yield sims
    for sim in sims.values():
        sim.faults.clear()


def sim(stack: Stack, name: str) -> ProviderSim:
    """The simulator of gateway `name` in `stack`'s sandbox."""
    assert stack.sandbox is not None
    return stack.sandbox.sandbox.sims[name]


def book(stack: Stack, provider: str, texts: list[str]) -> Counter[str]:
    """How many times the gateway's message book holds each of `texts`."""
    wanted = set(texts)
    return Counter(m.text for m in list(sim(stack, provider).messages.values()) if m.text in wanted)


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, every: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


def wait_status(message_id: str, *statuses: Status, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    wanted = {s.value for s in statuses}

    def reached():  # type: ignore[no-untyped-def]
        st = get_status(message_id)
        return st if st is not None and st.status in wanted else None

    try:
        return wait_for(reached, timeout)
    except AssertionError:
        st = get_status(message_id)
        raise AssertionError(
            f"{message_id} is {st.status if st else None} ({st.error if st else ''}), "
            f"not {sorted(wanted)} after {timeout}s"
        ) from None


def processes_in(directory: Path) -> list[psutil.Process]:
    """The processes working in `directory` or below (those a `smsq` command started
    there: they inherit its working directory)."""
    found = []
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info["cwd"]
        if cwd and Path(cwd).is_relative_to(directory):
            found.append(proc)
    return found


# The `smsq` command as a new user's shell runs it, from this interpreter.
SMSQ = [sys.executable, "-c", "import sys; from worker.ops.cli import main; sys.exit(main())"]


def clean_env() -> dict[str, str]:
    """This environment without any SMSQ_* (a shell with nothing exported)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")}
