"""Balance monitoring through the real stack: the real worker runs `smsq.check_balances`,
its alert state and send guard are shared with this process through the store and Redis.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
import redis
from sqlmodel import select

from producer import db
from producer.enqueue import publisher
from producer.models import Alert, AlertState, BalanceSnapshot
from producer.queues import BALANCE_TASK, broker_url
from producer.settings import reload_settings
from tests.alert_helpers import WebhookServer
from tests.integration.conftest import wait_for
from worker import redis_client
from worker.balance import alerts
from worker.balance.checks import check_all
from worker.ops.cli import main as cli
from worker.sending import guard

pytestmark = pytest.mark.integration


def alert_rows(provider: str = "keccel") -> list[Alert]:
    with db.session() as s:
        return list(
            s.exec(select(Alert).where(Alert.provider == provider).order_by(Alert.id)).all()  # type: ignore[arg-type]
        )


def firing(provider: str = "keccel") -> dict[str, bool]:
    with db.session() as s:
        rows = s.exec(select(AlertState).where(AlertState.provider == provider)).all()
    return {r.kind: r.firing for r in rows}


@pytest.fixture
def monitored(stack, sims, monkeypatch) -> Iterator[WebhookServer]:  # type: ignore[no-untyped-def]
    """This process alerts to a local webhook (503 first); accounts healthy again after."""
    server = WebhookServer([503])
    monkeypatch.setenv("SMSQ_ALERT_WEBHOOK_URL", server.url)
    monkeypatch.setenv("SMSQ_KECCEL_LOW_BALANCE", "100")
    monkeypatch.setattr(redis_client, "_client", None)  # the stack's Redis, not an earlier one
    reload_settings()
    guard.forget_cache()
    try:
        yield server
    finally:
        for sim in sims.values():
            sim.update_account({"balance": 100000, "expires_at": None, "active": True})
        check_all()  # re-arms everything and tells the send guard the accounts are fine
        server.stop()
        monkeypatch.undo()
        reload_settings()
        guard.forget_cache()


@pytest.fixture
def worker_guard_settles() -> Iterator[None]:
    """Torn down after `monitored` restored the accounts: wait out the worker's guard cache
    (it recorded the blocked state itself), so later tests' sends see the recovery."""
    yield
    time.sleep(guard.CACHE_SECONDS + 0.5)


def test_worker_check_blocks_an_inactive_account_for_every_process(  # type: ignore[no-untyped-def]
    stack, sims, worker_guard_settles, monitored
) -> None:
    before = len(alert_rows())
    sims["keccel"].update_account({"active": False})
    publisher().send_task(BALANCE_TASK)  # what beat does every SMSQ_BALANCE_CHECK_SECONDS
    wait_for(lambda: len(alert_rows()) > before, timeout=30)
    [alert] = alert_rows()[before:]
    assert alert.kind == "inactive"
    # the worker's check wrote the guard state to the shared Redis
    raw = redis.Redis.from_url(broker_url()).get("smsq:account:keccel")
    assert raw is not None and json.loads(raw)["active"] is False
    guard.forget_cache()
    block = guard.account_block("keccel")
    assert block is not None and "inactive" in block
    assert guard.account_block("smsclub") is None
    # this process's check sees the shared state: no second alert for the same crossing
    assert check_all()["keccel"]["raised"] == []  # type: ignore[index]
    assert len(alert_rows()) == before + 1
    # recovery: the check re-arms the alert and lifts the block at once
    sims["keccel"].update_account({"active": True})
    check_all()
    assert guard.account_block("keccel") is None
    assert firing()["inactive"] is False


def test_low_balance_alert_reaches_a_webhook_that_was_down_once(stack, sims, monitored) -> None:  # type: ignore[no-untyped-def]
    before = len(alert_rows())
    sims["keccel"].update_account({"balance": 42, "expires_in_days": 3})
    first = check_all()
    assert sorted(first["keccel"]["raised"]) == ["expiring", "low_balance"]  # type: ignore[index]
    assert monitored.answers[:1] == [503]
    for _ in range(3):
        assert check_all()["keccel"]["raised"] == []  # type: ignore[index]

    def retried() -> bool:  # what the smsq.deliver_alerts task does, in this process's settings
        alerts.retry_task()
        return len(monitored.delivered()) == 2

    wait_for(retried, timeout=30, every=0.5)
    kinds = sorted(b["kind"] for b in monitored.delivered())
    assert kinds == ["expiring", "low_balance"]
    low = next(b for b in monitored.delivered() if b["kind"] == "low_balance")
    assert low["provider"] == "keccel" and low["balance"] == 42.0 and low["threshold"] == 100.0
    assert low["expires_at"] is not None and low["message"]
    assert len(alert_rows()) == before + 2
    with db.session() as s:
        snaps = s.exec(select(BalanceSnapshot).where(BalanceSnapshot.provider == "keccel")).all()
    assert len(snaps) >= 4
    assert cli(["balance", "--json"]) == 0


def test_balance_json_shows_projection_and_last_alert(stack, sims, monitored, capsys) -> None:  # type: ignore[no-untyped-def]
    sims["keccel"].update_account({"expires_in_days": -1})
    check_all()
    capsys.readouterr()
    assert cli(["balance", "--json"]) == 0
    rows = {r["provider"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["keccel"]["state"] == "expired"
    assert rows["keccel"]["last_alert"]["kind"] == "expired"
    assert rows["keccel"]["projection"]  # "about N days" or "no usage"
    assert os.environ["SMSQ_ALERT_WEBHOOK_URL"] not in json.dumps(rows)
    block = guard.account_block("keccel")
    assert block is not None and "expired" in block
