"""PostgreSQL connections give up on a silent network in seconds, not TCP's minutes.

A partitioned host, or a primary whose host is gone, answers nothing: no reset, no
error. Without limits a worker thread waits about two minutes for a connection and
about fifteen for a request, holding its gateway answers and ignoring its retry
budget. `producer.db` gives every PostgreSQL connection libpq's connect timeout,
TCP user timeout and keepalives, unless SMSQ_DATABASE_URL sets them itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from producer import db
from tests.pg import EmbeddedPostgres
from tests.unit.conftest import isolate, restore


@pytest.fixture
def url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, postgres: EmbeddedPostgres
) -> Iterator[str]:
    url = postgres.database() + "&connect_timeout=4"
    isolate(monkeypatch, tmp_path, SMSQ_DATABASE_URL=url)
    yield url
    restore(monkeypatch)


def test_a_store_connection_carries_the_network_limits_and_the_url_wins(url: str) -> None:
    with db.get_engine().connect() as conn:
        params = conn.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
    assert params["connect_timeout"] == "4"  # from the URL
    assert params["tcp_user_timeout"] == "30000"
    assert (params["keepalives"], params["keepalives_idle"]) == ("1", "30")
    assert (params["keepalives_interval"], params["keepalives_count"]) == ("10", "3")


def test_a_limit_the_url_sets_is_left_to_it() -> None:
    assert db.postgres_connect_args("postgresql+psycopg://u@h/d?tcp_user_timeout=5") == {
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
