"""PostgreSQL sessions over a network that can fail silently.

A partitioned host, or a primary whose host is gone, answers nothing: no reset, no
error. Without limits a worker thread waits about two minutes for a connection and
about fifteen for a request, holding its gateway answers and ignoring its retry
budget; and a transaction its client can no longer finish keeps its row locks until
the server drops it. So every smsq connection to PostgreSQL has libpq's connect
timeout, TCP user timeout and keepalives (unless SMSQ_DATABASE_URL sets them), and
the server ends a transaction left idle for `PG_IDLE_IN_TRANSACTION`; and beat's
settlement skips rows another transaction holds rather than wait behind it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from producer import db
from producer.models import Message, utcnow
from producer.status import Status
from tests.pg import EmbeddedPostgres
from tests.unit.conftest import isolate, restore
from worker.resilience import liveness, reconcile


@pytest.fixture
def url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, postgres: EmbeddedPostgres
) -> Iterator[str]:
    url = postgres.database() + "&connect_timeout=4"
    isolate(
        monkeypatch,
        tmp_path,
        SMSQ_DATABASE_URL=url,
        SMSQ_KECCEL_TOKEN="k",
        SMSQ_UNCERTAIN_SEND="resend",
    )
    yield url
    restore(monkeypatch)


def test_a_store_connection_carries_the_network_limits_and_the_url_wins(url: str) -> None:
    with db.get_engine().connect() as conn:
        params = conn.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
        idle = conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar()
    assert params["connect_timeout"] == "4"  # from the URL
    assert params["tcp_user_timeout"] == "30000"
    assert (params["keepalives"], params["keepalives_idle"]) == ("1", "30")
    assert (params["keepalives_interval"], params["keepalives_count"]) == ("10", "3")
    assert idle == db.PG_IDLE_IN_TRANSACTION == "30s"


def test_a_limit_the_url_sets_is_left_to_it() -> None:
    assert db.postgres_connect_args("postgresql+psycopg://u@h/d?tcp_user_timeout=5") == {
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }


def sending_row() -> str:
    now = utcnow()
    row = Message(
        to="243851234567",
        text="held",
        provider="keccel",
        status=Status.SENDING.value,
        claimed_at=now,
        claimed_by=liveness.RELEASED,
        claim_token="t" * 32,
        attempts=1,
    )
    with db.session() as s:
        s.add(row)
        s.commit()
        return row.id


def test_settling_skips_a_row_another_transaction_holds_instead_of_waiting(url: str) -> None:
    """As a writer cut off mid-way holds it (its UPDATE ran, its COMMIT never came):
    beat's settlement leaves the row for a later tick at once; once the lock is gone,
    it settles it."""
    mid = sending_row()
    with db.get_engine().connect() as holder:
        holder.execute(text("SELECT 1 FROM messages WHERE id = :id FOR UPDATE"), {"id": mid})
        began = time.monotonic()
        done = reconcile.settle([mid], source="beat", cause="worker lost mid-send")
        assert time.monotonic() - began < 2.0  # not the 30 s until the server ends `holder`
        assert done.total == 0
        holder.rollback()
    assert reconcile.settle([mid], source="beat", cause="worker lost mid-send").requeued == 1
