"""Balance checks against the gateway simulators over real HTTP, alerts to real receivers.

Real parts: the sandbox (uvicorn on loopback), a SQLite store in a temp dir,
the embedded Redis server (send guard, retry task), a local webhook HTTP
server and a local SMTP server (aiosmtpd). The account of each simulated
gateway is set through `/_control/<provider>/account`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
from sqlmodel import select

from producer import db
from producer.embedded_redis import ensure_embedded_redis, stop_embedded_redis
from producer.enqueue import reset_publisher
from producer.models import Alert, AlertDelivery, AlertState, BalanceSnapshot, Message, utcnow
from producer.queues import ALERT_TASK, broker_url
from producer.settings import reload_settings
from tests.alert_helpers import SmtpServer, WebhookServer
from worker import redis_client
from worker.balance import alerts
from worker.balance.checks import check_all
from worker.gateways.sandbox.server import RunningSandbox, start_in_thread
from worker.ops.cli import main as cli
from worker.ops.stack import sandbox_env
from worker.sending import guard

PROVIDERS = ["keccel", "smsclub"]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    running = start_in_thread(delivery_seconds=0.2)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir: Path = tmp_path_factory.mktemp("alerts-redis")
    yield ensure_embedded_redis(data_dir)
    stop_embedded_redis(data_dir)


def _reset_process() -> None:
    reload_settings()
    broker_url.cache_clear()
    reset_publisher()
    db.reset_engine()
    guard.forget_cache()


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sandbox: RunningSandbox, redis_url: str
) -> Iterator[pytest.MonkeyPatch]:
    """A fresh store, Redis db flushed, keccel (low balance 100) and smsclub on the sandbox."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("SMSQ_"):
            monkeypatch.delenv(key)
    for key, value in sandbox_env(sandbox.url, PROVIDERS).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SMSQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SMSQ_BROKER_URL", redis_url)
    monkeypatch.setenv("SMSQ_KECCEL_LOW_BALANCE", "100")
    monkeypatch.setattr(redis_client, "_client", None)
    redis.Redis.from_url(redis_url).flushdb()
    httpx.post(f"{sandbox.url}/_control/reset")
    _reset_process()
    yield monkeypatch
    monkeypatch.undo()
    _reset_process()


@pytest.fixture
def webhook(env: pytest.MonkeyPatch) -> Iterator[WebhookServer]:
    server = WebhookServer()
    env.setenv("SMSQ_ALERT_WEBHOOK_URL", server.url + "?token=hook-token-0042")
    reload_settings()
    yield server
    server.stop()


def account(sandbox: RunningSandbox, provider: str, **values: object) -> None:
    answer = httpx.post(f"{sandbox.url}/_control/{provider}/account", json=values)
    answer.raise_for_status()


def stored_alerts() -> list[Alert]:
    with db.session() as s:
        return list(s.exec(select(Alert).order_by(Alert.id)).all())  # type: ignore[arg-type]


def deliveries() -> list[AlertDelivery]:
    with db.session() as s:
        return list(s.exec(select(AlertDelivery).order_by(AlertDelivery.id)).all())  # type: ignore[arg-type]


def test_low_balance_gives_one_alert_over_many_checks(sandbox, webhook) -> None:  # type: ignore[no-untyped-def]
    account(sandbox, "keccel", balance=42)
    for _ in range(5):
        check_all()
    assert len(webhook.received) == 1
    body = webhook.received[0]
    assert body["kind"] == "low_balance" and body["provider"] == "keccel"
    assert body["balance"] == 42.0 and body["threshold"] == 100.0
    assert body["expires_at"] is None and body["unit"] == "credits"
    assert "42 credits" in body["message"] and "100 credits" in body["message"]
    [alert] = stored_alerts()
    assert [(d.channel, d.state) for d in deliveries()] == [("webhook", "delivered")]
    assert alert.kind == "low_balance"
    with db.session() as s:
        snapshots = s.exec(select(BalanceSnapshot).where(BalanceSnapshot.provider == "keccel"))
        assert [snap.amount for snap in snapshots] == [42.0] * 5


def test_recovery_then_a_second_crossing_gives_a_second_alert(sandbox, webhook) -> None:  # type: ignore[no-untyped-def]
    fired = []
    for balance in (42, 105, 42, 108, 111, 50, 40):  # 105 and 108 are inside the 10 % margin
        account(sandbox, "keccel", balance=balance)
        fired.append(check_all()["keccel"]["raised"])  # type: ignore[index]
    assert fired == [["low_balance"], [], [], [], [], ["low_balance"], []]
    assert [b["balance"] for b in webhook.received] == [42.0, 50.0]
    assert len({b["alert_id"] for b in webhook.received}) == 2


def test_expiry_in_three_days_gives_expiring(sandbox, webhook) -> None:  # type: ignore[no-untyped-def]
    account(sandbox, "keccel", expires_in_days=3)
    result = check_all()
    assert result["keccel"]["raised"] == ["expiring"]  # type: ignore[index]
    [body] = webhook.received
    expires = datetime.fromisoformat(body["expires_at"])
    assert expires.tzinfo is not None
    assert timedelta(days=2.9) < expires - datetime.now(UTC) < timedelta(days=3.1)
    assert "expire" in body["message"] and "about 3 days" in body["message"]
    assert body["state"] == "active"
    assert guard.account_block("keccel") is None  # expiring soon still sends
    check_all()
    assert len(webhook.received) == 1


def test_expired_and_inactive_alert_and_block_sends_until_recovery(
    sandbox, webhook, capsys
) -> None:  # type: ignore[no-untyped-def]
    account(sandbox, "keccel", expires_in_days=-1)
    assert check_all()["keccel"]["raised"] == ["expired"]  # type: ignore[index]
    guard.forget_cache()  # read back from Redis, as another process would
    block = guard.account_block("keccel")
    assert block is not None and "expired" in block and "keccel" in block
    assert guard.account_block("smsclub") is None

    account(sandbox, "keccel", expires_at=None, active=False)
    assert check_all()["keccel"]["raised"] == ["inactive"]  # type: ignore[index]
    block = guard.account_block("keccel")  # the check refreshed this process at once
    assert block is not None and "inactive" in block

    account(sandbox, "keccel", active=True)
    assert cli(["balance", "--json"]) == 0  # after a renewal: unblocks before the next check
    assert guard.account_block("keccel") is None
    guard.forget_cache()
    assert guard.account_block("keccel") is None
    check_all()
    assert [b["kind"] for b in webhook.received] == ["expired", "inactive"]
    with db.session() as s:
        states = {st.kind: st.firing for st in s.exec(select(AlertState))}
    assert not any(states.values())


def test_guard_sees_an_expiry_that_passes_between_checks(sandbox, env) -> None:  # type: ignore[no-untyped-def]
    account(sandbox, "keccel", expires_at=(datetime.now(UTC) + timedelta(seconds=1.5)).isoformat())
    check_all()
    assert guard.account_block("keccel") is None
    deadline = time.monotonic() + 10
    while guard.account_block("keccel") is None and time.monotonic() < deadline:
        time.sleep(0.2)
    block = guard.account_block("keccel")
    assert block is not None and "expired" in block


def test_guard_says_none_when_redis_is_down(env) -> None:  # type: ignore[no-untyped-def]
    env.setattr(redis_client, "_client", redis.Redis.from_url("redis://127.0.0.1:1/0"))
    guard.forget_cache()
    assert guard.account_block("keccel") is None


def test_webhook_down_at_first_is_retried_not_lost(sandbox, webhook, redis_url) -> None:  # type: ignore[no-untyped-def]
    webhook.statuses.extend([503])
    account(sandbox, "keccel", balance=10)
    check_all()
    assert webhook.answers == [503]
    [delivery] = deliveries()
    assert delivery.state == "pending" and delivery.attempts == 1
    assert delivery.last_error == "webhook: HTTP 503"
    # a retry task is queued for the worker, with a short countdown (never a long ETA)
    queued = [json.loads(m) for m in redis.Redis.from_url(redis_url).lrange("maintenance", 0, -1)]
    retries = [m["headers"] for m in queued if m["headers"]["task"] == ALERT_TASK]
    assert len(retries) == 1
    eta = datetime.fromisoformat(retries[0]["eta"])
    assert eta - datetime.now(UTC) <= timedelta(seconds=60)
    # what that task does, until the webhook takes it
    deadline = time.monotonic() + 30
    while not webhook.delivered() and time.monotonic() < deadline:
        alerts.retry_task()
        time.sleep(0.2)
    assert webhook.answers == [503, 200]
    assert webhook.received[0] == webhook.received[1]  # the same alert, not a new one
    [delivery] = deliveries()
    assert delivery.state == "delivered" and delivery.attempts == 2
    check_all()
    assert len(webhook.received) == 2 and len(stored_alerts()) == 1
    # the webhook URL (it carries a token) is stored nowhere
    for alert in stored_alerts():
        assert "hook-token-0042" not in alert.payload and "127.0.0.1" not in alert.payload


def test_a_check_with_the_webhook_down_keeps_the_alert_for_later_checks(sandbox, webhook) -> None:  # type: ignore[no-untyped-def]
    webhook.server.shutdown()  # connection refused from now on
    webhook.server.server_close()
    account(sandbox, "keccel", active=False)
    check_all()
    [delivery] = deliveries()
    assert delivery.state == "pending" and delivery.last_error == "webhook: ConnectError"
    replacement = WebhookServer()
    try:
        os.environ["SMSQ_ALERT_WEBHOOK_URL"] = replacement.url
        reload_settings()
        alerts.deliver_due(utcnow() + timedelta(minutes=1))  # a later check or tick
        assert [b["kind"] for b in replacement.received] == ["inactive"]
    finally:
        replacement.stop()
    assert deliveries()[0].state == "delivered"


def test_email_alert_through_a_real_smtp_server(sandbox, env, caplog) -> None:  # type: ignore[no-untyped-def]
    smtp = SmtpServer().start()
    try:
        env.setenv("SMSQ_SMTP_HOST", "127.0.0.1")
        env.setenv("SMSQ_SMTP_PORT", str(smtp.port))
        env.setenv("SMSQ_SMTP_USERNAME", smtp.username)
        env.setenv("SMSQ_SMTP_ALLOW_PLAINTEXT", "true")  # the test server has no TLS
        env.setenv("SMSQ_SMTP_PASSWORD", smtp.password)
        env.setenv("SMSQ_SMTP_FROM", "smsq@example.com")
        env.setenv("SMSQ_ALERT_EMAIL_TO", "ops@example.com, oncall@example.com")
        reload_settings()
        account(sandbox, "keccel", active=False)
        with caplog.at_level("DEBUG"):
            check_all()
            check_all()
    finally:
        smtp.stop()
    assert smtp.logins == ["alerts"]
    [(mail_from, rcpt)] = smtp.envelopes
    assert mail_from == "smsq@example.com"
    assert rcpt == ["ops@example.com", "oncall@example.com"]
    [message] = smtp.messages
    assert message["Subject"].startswith("[smsq] keccel inactive:")
    body = message.get_payload(decode=True).decode()
    assert "reports the account inactive" in body and "provider: keccel" in body
    assert [(d.channel, d.state) for d in deliveries()] == [("email", "delivered")]
    assert "WARNING" in {r.levelname for r in caplog.records if r.name == "smsq.alerts"}
    stored = " ".join(a.payload for a in stored_alerts())
    logged = caplog.text
    assert smtp.password not in stored and smtp.password not in logged
    assert smtp.password not in body


def test_checks_racing_in_threads_raise_one_alert(sandbox, webhook) -> None:  # type: ignore[no-untyped-def]
    """Two beats on two hosts: the conditional update lets exactly one raise it."""
    account(sandbox, "keccel", balance=1)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def one_check() -> None:
        try:
            start.wait()
            check_all()
        except BaseException as exc:  # pragma: no cover - shown below
            errors.append(exc)

    threads = [threading.Thread(target=one_check) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert [a.kind for a in stored_alerts()] == ["low_balance"]
    assert len(webhook.received) == 1


def test_projection_in_the_cli_from_segments_and_balance_history(sandbox, env, capsys) -> None:  # type: ignore[no-untyped-def]
    account(sandbox, "keccel", balance=1000)
    account(sandbox, "smsclub", balance=1000)
    now = utcnow()
    with db.session() as s:
        for i in range(4):  # 200 segments through keccel in the last two hours
            s.add(
                Message(
                    to="243851234567",
                    text="x",
                    provider="keccel",
                    segments=50,
                    status="delivered",
                    sent_at=now - timedelta(minutes=30 * i),
                )
            )
        for hours, amount in ((24, 1100.0), (12, 1050.0)):  # smsclub spends 100 UAH a day
            s.add(
                BalanceSnapshot(
                    provider="smsclub",
                    amount=amount,
                    unit="UAH",
                    created_at=now - timedelta(hours=hours),
                )
            )
        s.commit()
    assert cli(["balance", "--json"]) == 0
    rows = {r["provider"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["keccel"]["burn_basis"] == "segments sent"
    assert rows["keccel"]["projection_days"] == pytest.approx(5.0)  # 1000 / 200 a day
    assert rows["keccel"]["projection"] == "about 5 days"
    assert rows["smsclub"]["burn_basis"] == "balance history"
    assert rows["smsclub"]["projection_days"] == pytest.approx(10.0)  # 1000 / 100 a day
    assert {"provider", "balance", "unit", "expires_at", "state", "error"} <= set(rows["keccel"])

    account(sandbox, "keccel", balance=80)
    result = check_all()
    assert result["keccel"]["raised"] == ["low_balance"]  # type: ignore[index]
    [alert] = stored_alerts()
    assert json.loads(alert.payload)["projection_days"] == pytest.approx(0.4)
    assert "less than a day" in alert.message
    assert cli(["balance"]) == 0
    table = capsys.readouterr().out
    assert "less than a day" in table and "low_balance" in table
    assert cli(["alerts", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["kind"] == "low_balance" and listed["deliveries"] == []
    assert cli(["alerts"]) == 0
    assert "keccel" in capsys.readouterr().out
    assert cli(["alerts", "--limit", "0"]) == 2
