"""SMSQ_API_KEY_LIMIT and SMSQ_RECIPIENT_LIMIT over HTTP (issue 15, point 3), on a
real Redis: 429 with Retry-After past a limit, 503 when the counters are
unreachable (fail closed), nothing stored either way."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import func, select

from producer import api as producer_api
from producer import db, quotas
from producer.models import Message
from producer.settings import reload_settings
from tests.unit.conftest import NO_BROKER, flush, isolate, restore

SHOP, BANK = "limit-shop-key", "limit-bank-key"
A = "243851234567"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path, real_redis: str) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    flush(real_redis)
    isolate(
        monkeypatch,
        tmp_path,
        SMSQ_KECCEL_TOKEN="k",
        SMSQ_API_KEYS=f"shop:{SHOP},bank:{BANK}",
        SMSQ_BROKER_URL=real_redis,
        SMSQ_API_KEY_LIMIT="5/minute",
        SMSQ_RECIPIENT_LIMIT="off",
    )
    monkeypatch.setattr(producer_api, "publish_send", lambda ids, countdown=None, **_: None)
    from worker.web import app

    with TestClient(app) as c:
        yield c
    restore(monkeypatch)


def setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    reload_settings()


def post(client: TestClient, to: str | list[str], key: str = SHOP):  # type: ignore[no-untyped-def]
    return client.post("/v1/messages", json={"to": to, "text": "hi"}, headers=auth(key))


def stored() -> int:
    with db.session() as s:
        return s.exec(select(func.count()).select_from(Message)).one()


def numbers(n: int) -> list[str]:
    return [f"24385123{i:04d}" for i in range(n)]


def test_past_the_key_limit_is_429_with_retry_after_and_nothing_stored(client) -> None:  # type: ignore[no-untyped-def]
    assert post(client, numbers(3)).status_code == 201
    assert post(client, A).status_code == 201
    refused = post(client, numbers(2))  # 4 taken, 2 more would pass 5
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "shop" in refused.json()["error"] and "SMSQ_API_KEY_LIMIT" in refused.json()["error"]
    assert stored() == 4
    assert post(client, A).status_code == 201  # the fifth recipient still fits
    assert post(client, numbers(5), key=BANK).status_code == 201  # another key: its own count
    assert stored() == 10


def test_several_limits_each_hold(client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    setting(monkeypatch, "SMSQ_API_KEY_LIMIT", "100/minute;2/hour")
    assert post(client, A).status_code == 201
    assert post(client, A).status_code == 201
    refused = post(client, A)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 60
    assert stored() == 2


def test_one_request_over_the_limit_by_itself_is_422_naming_to(client) -> None:  # type: ignore[no-untyped-def]
    answer = post(client, numbers(6))
    assert answer.status_code == 422 and answer.json()["field"] == "to"
    assert "SMSQ_API_KEY_LIMIT" in answer.json()["rule"] and stored() == 0


def test_the_default_key_limit_holds(client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("SMSQ_API_KEY_LIMIT")
    reload_settings()
    assert post(client, numbers(600)).status_code == 201
    refused = post(client, A)
    assert refused.status_code == 429 and "600 per 1 minute" in refused.json()["error"]
    assert stored() == 600


def test_recipient_limit_over_http_is_429_naming_the_numbers(  # type: ignore[no-untyped-def]
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    setting(monkeypatch, "SMSQ_API_KEY_LIMIT", "off")
    setting(monkeypatch, "SMSQ_RECIPIENT_LIMIT", "1/hour")
    assert post(client, A).status_code == 201
    refused = post(client, [numbers(2)[1], A])
    assert refused.status_code == 429 and refused.json()["field"] == "to"
    assert refused.json()["numbers"] == [A] and int(refused.headers["Retry-After"]) > 3000
    assert post(client, A, key=BANK).status_code == 429  # over every caller
    assert stored() == 1


def test_counters_unreachable_is_503_and_nothing_stored(  # type: ignore[no-untyped-def]
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    setting(monkeypatch, "SMSQ_BROKER_URL", NO_BROKER)
    from producer.queues import broker_url

    broker_url.cache_clear()
    answer = post(client, A)
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert "rate-limit counters are unreachable" in answer.json()["error"]
    setting(monkeypatch, "SMSQ_API_KEY_LIMIT", "off")
    setting(monkeypatch, "SMSQ_RECIPIENT_LIMIT", "10/hour")
    assert post(client, A).status_code == 503  # the recipient limit fails closed too
    assert stored() == 0


def test_concurrent_takes_never_overshoot(real_redis: str, client) -> None:  # type: ignore[no-untyped-def]
    """The bound the README states: 30 racing requests of 2 recipients under 20 take
    exactly 10 (a moving-window hit is one atomic script)."""
    items = quotas.parse_limit("20/minute", "X")
    results: list[object] = []
    start = threading.Barrier(30)

    def one() -> None:
        start.wait()
        results.append(quotas.take(items, "race", 2, quotas.KEY_SCOPE))

    threads = [threading.Thread(target=one) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count(None) == 10
