"""The suppression endpoints (issue 15, point 4): behind the API key, one global list."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from producer import api as producer_api
from producer import get_status, is_suppressed
from tests.unit.conftest import isolate, restore

SHOP, BANK = "sup-shop-key", "sup-bank-key"
A = "243851234567"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    isolate(
        monkeypatch,
        tmp_path,
        SMSQ_KECCEL_TOKEN="k",
        SMSQ_API_KEYS=f"shop:{SHOP},bank:{BANK}",
        SMSQ_API_KEY_LIMIT="off",
        SMSQ_RECIPIENT_LIMIT="off",
    )
    monkeypatch.setattr(producer_api, "publish_send", lambda ids, countdown=None, **_: None)
    from worker.web import app

    with TestClient(app) as c:
        yield c
    restore(monkeypatch)


def test_add_list_and_remove(client: TestClient) -> None:
    added = client.post(
        "/v1/suppressions",
        json={"number": "+243 851 234 567", "reason": "STOP"},
        headers=auth(SHOP),
    )
    assert added.status_code == 201
    assert added.json()["number"] == A and added.json()["added_by"] == "shop"
    listed = client.get("/v1/suppressions", headers=auth(BANK)).json()  # global: any key reads
    assert [e["number"] for e in listed["suppressions"]] == [A] and listed["next"] is None
    sent = client.post("/v1/messages", json={"to": A, "text": "x"}, headers=auth(BANK))
    assert get_status(sent.json()["id"]).status == "rejected"  # type: ignore[union-attr]
    assert client.delete(f"/v1/suppressions/{A}", headers=auth(BANK)).status_code == 204
    assert not is_suppressed(A)
    assert client.delete(f"/v1/suppressions/{A}", headers=auth(BANK)).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"number": "12"}, "number"),
        ({"number": A, "scope": "some"}, "scope"),
        ({"number": A, "reason": "x" * 201}, "reason"),
        ({}, "number"),
    ],
)
def test_bad_input_is_422_naming_the_field(client: TestClient, body, field: str) -> None:  # type: ignore[no-untyped-def]
    answer = client.post("/v1/suppressions", json=body, headers=auth(SHOP))
    assert answer.status_code == 422 and answer.json()["field"] == field
    assert client.get("/v1/suppressions", headers=auth(SHOP)).json()["suppressions"] == []


def test_without_a_key_is_401(client: TestClient) -> None:
    assert client.post("/v1/suppressions", json={"number": A}).status_code == 401
    assert client.get("/v1/suppressions").status_code == 401
    assert client.delete(f"/v1/suppressions/{A}").status_code == 401
    assert not is_suppressed(A)


def test_pages_are_bounded(client: TestClient) -> None:
    assert client.get("/v1/suppressions?limit=1001", headers=auth(SHOP)).status_code == 422
    for n in ("243851234567", "243851234568"):
        client.post("/v1/suppressions", json={"number": n}, headers=auth(SHOP))
    page = client.get("/v1/suppressions?limit=1", headers=auth(SHOP)).json()
    assert page["next"] == "243851234567"
    rest = client.get(f"/v1/suppressions?limit=1&after={page['next']}", headers=auth(SHOP)).json()
    assert [e["number"] for e in rest["suppressions"]] == ["243851234568"]
