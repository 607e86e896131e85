"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from collections.abc import Iterator

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
