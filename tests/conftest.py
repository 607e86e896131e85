"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import EmbeddedPostgres, available, start


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    """One embedded PostgreSQL server for the whole session (see tests/pg.py)."""
    if not available():
        pytest.skip("no embedded PostgreSQL: the pgserver wheel is not installed")
    server = start()
    yield server
    server.stop()


def _our_redis_servers() -> dict[int, str]:
    """pid -> working directory of each embedded redis-server of this virtualenv."""
    binary = str(Path(sys.prefix) / "lib")
    found: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            exe = os.readlink(proc / "exe")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if exe.startswith(binary) and exe.endswith("redis-server"):
            found[int(proc.name)] = cwd
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`make test` leaves no embedded Redis running: every server this session started
    under its own temporary directory, or under the checkout's `./var`, is stopped at
    the end and named, so the test that forgot it can be found. Servers of another
    session running beside this one (its own basetemp) are left alone."""
    before = set(_our_redis_servers())
    ours = (str(tmp_path_factory.getbasetemp()), str(Path("var").resolve()))
    yield
    for pid, cwd in _our_redis_servers().items():
        if pid in before or not cwd.removesuffix(" (deleted)").startswith(ours):
            continue
        sys.stderr.write(f"\nstopping an embedded Redis left running by the tests: {cwd}\n")
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)


# Run last, in this order: they use the package's shared stack after every other
# integration test has (one stops and restarts its worker; the other reads every
# process's log for secrets). Stated here instead of implied by file names.
RUN_LAST = ("test_graceful_shutdown.py", "test_no_secret_in_logs.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Unit tests first, then integration tests, `RUN_LAST` at the very end."""

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        if name in RUN_LAST:
            return (2, RUN_LAST.index(name))
        return (1 if "integration" in item.path.parts else 0, 0)

    items.sort(key=rank)  # stable: the order within each rank is pytest's own
