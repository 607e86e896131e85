"""Named API keys (issue 15, point 2): a message made over HTTP belongs to its key's
name, a key reads only its own messages, idempotency keys are per owner. Real
SQLite store; publishing to the broker is recorded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import func, select

from producer import api as producer_api
from producer import db, get_status, send_sms
from producer.models import Message
from producer.settings import Settings, parse_api_keys
from tests.unit.conftest import isolate, restore

SHOP, BANK, SHOP_NEW, BARE = "shop-key-1", "bank-key-2", "shop-key-3", "bare-key-4"
KEYS = f"shop:{SHOP}, bank:{BANK}, shop:{SHOP_NEW}, {BARE}"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    isolate(
        monkeypatch,
        tmp_path,
        SMSQ_KECCEL_TOKEN="k",
        SMSQ_API_KEYS=KEYS,
        SMSQ_API_KEY_LIMIT="off",
        SMSQ_RECIPIENT_LIMIT="off",
    )
    monkeypatch.setattr(producer_api, "publish_send", lambda ids, countdown=None, **_: None)
    from worker.web import app

    with TestClient(app) as c:
        yield c
    restore(monkeypatch)


def post(client: TestClient, key: str, **body: object) -> str:
    answer = client.post(
        "/v1/messages", json={"to": "243851234567", "text": "hi", **body}, headers=auth(key)
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def rows() -> int:
    with db.session() as s:
        return s.exec(select(func.count()).select_from(Message)).one()


def test_a_message_made_over_http_belongs_to_its_keys_name(client: TestClient) -> None:
    assert get_status(post(client, SHOP)).owner == "shop"  # type: ignore[union-attr]
    assert get_status(post(client, BANK)).owner == "bank"  # type: ignore[union-attr]
    assert get_status(post(client, BARE)).owner == "default"  # type: ignore[union-attr]
    assert get_status(send_sms("243851234567", "from Python")).owner is None  # type: ignore[union-attr]


def test_a_key_reads_only_its_own_messages(client: TestClient) -> None:
    mid = post(client, SHOP)
    assert client.get(f"/v1/messages/{mid}", headers=auth(SHOP)).status_code == 200
    # Another key of the same name (a rotation) reads it too; others get 404, as if unknown.
    assert client.get(f"/v1/messages/{mid}", headers=auth(SHOP_NEW)).status_code == 200
    other = client.get(f"/v1/messages/{mid}", headers=auth(BANK))
    assert other.status_code == 404 and other.json() == {"error": "no such message"}
    python_made = send_sms("243851234567", "from Python")
    assert client.get(f"/v1/messages/{python_made}", headers=auth(SHOP)).status_code == 404


def test_idempotency_keys_are_per_owner(client: TestClient) -> None:
    shop = post(client, SHOP, idempotency_key="order-42")
    bank = post(client, BANK, idempotency_key="order-42")
    assert shop != bank and rows() == 2  # the second key's message is not dropped
    assert post(client, SHOP_NEW, idempotency_key="order-42") == shop  # same owner: same id
    assert send_sms("243851234567", "py", idempotency_key="order-42") not in {shop, bank}
    assert send_sms("243851234567", "py", idempotency_key="order-42") == send_sms(
        "243851234567", "again", idempotency_key="order-42"
    )
    assert rows() == 3


def test_bulk_idempotency_keys_are_per_owner_too(client: TestClient) -> None:
    numbers = ["243851234567", "243851234568"]
    shop = client.post(
        "/v1/messages",
        json={"to": numbers, "text": "x", "idempotency_key": "b"},
        headers=auth(SHOP),
    ).json()["ids"]
    bank = client.post(
        "/v1/messages",
        json={"to": numbers, "text": "x", "idempotency_key": "b"},
        headers=auth(BANK),
    ).json()["ids"]
    assert set(shop).isdisjoint(bank) and rows() == 4


def test_api_keys_parse_names_and_bare_keys() -> None:
    assert parse_api_keys(" a:k1 ,k2,,b.c-d_e: k3 ") == [
        ("a", "k1"),
        ("default", "k2"),
        ("b.c-d_e", "k3"),
    ]


@pytest.mark.parametrize("raw", ["bad name:secret-xyz", ":secret-xyz", "shop:", "é:secret-xyz"])
def test_a_bad_api_keys_entry_is_refused_without_showing_the_key(raw: str) -> None:
    with pytest.raises(ValueError, match="SMSQ_API_KEYS entry 1") as caught:
        Settings(api_keys=raw)  # type: ignore[arg-type]
    assert "secret-xyz" not in str(caught.value)
