"""The stack's embedded Redis has a password of its own and every part of the stack
uses it (issue 15, point 8): a client without it is refused, while the worker (broker),
beat (redbeat), web and this producer keep working end to end; the password shows in
no process's log (Celery's banner masks it)."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from producer import send_sms
from producer.embedded_redis import PASSWORD_FILE, password_of
from producer.status import Status
from tests.integration.conftest import wait_status

pytestmark = pytest.mark.integration
ONCE = Retry(NoBackoff(), 0)


def test_a_client_without_the_password_is_refused(stack) -> None:  # type: ignore[no-untyped-def]
    url = stack.exported["SMSQ_BROKER_URL"]
    parts = urlsplit(url)
    assert parts.password and parts.password == password_of(stack.data_dir)
    assert (stack.data_dir / PASSWORD_FILE).stat().st_mode & 0o777 == 0o600
    for password in (None, "not-the-password"):
        client = redis.Redis(host=parts.hostname, port=parts.port, password=password, retry=ONCE)
        with pytest.raises(redis.AuthenticationError):
            client.ping()
        with pytest.raises(redis.AuthenticationError):
            client.keys("smsq:redbeat:*")
        client.close()


def test_the_stack_works_end_to_end_with_the_password(stack, sims) -> None:  # type: ignore[no-untyped-def]
    mid = send_sms("243851234567", f"password {uuid.uuid4().hex[:8]}", provider="keccel")
    assert wait_status(mid, Status.DELIVERED).attempts == 1
    health = httpx.get(f"{stack.web_url}/healthz", timeout=5).json()
    assert health["broker"] == "ok"
    client = redis.Redis.from_url(stack.exported["SMSQ_BROKER_URL"])
    try:
        assert client.keys("smsq:redbeat:*"), "beat keeps its schedule in the Redis"
        assert client.keys("smsq:alive:*"), "the worker's heartbeat"
        assert client.hlen("smsq:metrics") > 0, "the counters"
    finally:
        client.close()


def test_the_password_is_in_no_log_and_the_banner_masks_it(stack) -> None:  # type: ignore[no-untyped-def]
    password = urlsplit(stack.exported["SMSQ_BROKER_URL"]).password
    assert password
    logs = {p.stem: p.read_text(errors="replace") for p in (stack.data_dir / "logs").glob("*.log")}
    assert {"worker", "beat", "web"} <= set(logs)
    assert [name for name, text in logs.items() if password in text] == []
    assert "redis://:**@127.0.0.1" in logs["worker"]  # Celery's startup banner, masked
    assert password not in (stack.data_dir / "redis.log").read_text(errors="replace")
