"""The HTTP enqueue API of the web process: same validation and errors as the
producer, API keys from SMSQ_API_KEYS, nothing stored for rejected input, an
OpenAPI document. Real SQLite store; publishing to the broker is recorded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import func, select

from producer import api as producer_api
from producer import db
from producer.models import Message
from producer.settings import reload_settings
from tests.unit.conftest import isolate, restore

KEY = "web-api-test-key-1"


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[list[list[str]]]:  # type: ignore[no-untyped-def]
    isolate(
        monkeypatch,
        tmp_path,
        SMSQ_KECCEL_TOKEN="k",
        SMSQ_SMSCLUB_TOKEN="s",
        SMSQ_API_KEYS=f"other-key, {KEY}",
        # No broker here: the limits have their own tests on a real Redis (test_web_limits).
        SMSQ_API_KEY_LIMIT="off",
        SMSQ_RECIPIENT_LIMIT="off",
    )
    calls: list[list[str]] = []
    monkeypatch.setattr(
        producer_api, "publish_send", lambda ids, countdown=None, **_: calls.append(ids)
    )
    yield calls
    restore(monkeypatch)


@pytest.fixture
def client(published) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    from worker.web import app

    with TestClient(app) as c:
        yield c


AUTH = {"Authorization": f"Bearer {KEY}"}


def stored() -> int:
    with db.session() as s:
        return s.exec(select(func.count()).select_from(Message)).one()


def test_post_queues_and_get_reads_back(client: TestClient, published) -> None:  # type: ignore[no-untyped-def]
    answer = client.post(
        "/v1/messages", json={"to": "+243 851 234 567", "text": "Hello"}, headers=AUTH
    )
    assert answer.status_code == 201
    mid = answer.json()["id"]
    assert published == [[mid]]
    status = client.get(f"/v1/messages/{mid}", headers=AUTH)
    assert status.status_code == 200
    body = status.json()
    assert body["id"] == mid and body["to"] == "243851234567" and body["status"] == "queued"


def test_bulk_post(client: TestClient) -> None:
    answer = client.post(
        "/v1/messages",
        json={"to": ["380989361131", "380671234567"], "text": "Hi", "provider": "smsclub"},
        headers=AUTH,
    )
    assert answer.status_code == 201 and len(answer.json()["ids"]) == 2
    assert stored() == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"to": "12", "text": "x"}, "to"),
        ({"to": "24385123456a", "text": "x"}, "to"),
        ({"to": "243851234567", "text": ""}, "text"),
        ({"to": "243851234567", "text": "x", "provider": "nope"}, "provider"),
        ({"to": "243851234567", "text": "x", "sender": "A" * 12}, "sender"),
        ({"to": "243851234567", "text": "x", "send_at": "2001-01-01T00:00:00Z"}, "send_at"),
        ({"to": ["380989361131", "bad"], "text": "x", "provider": "smsclub"}, "to[1]"),
        ({"to": "243851234567", "text": "x", "priority": "urgent"}, "priority"),
        ({"to": "243851234567", "text": "x", "ttl": 0}, "ttl"),
        ({"to": "243851234567", "text": "x", "ttl": "soon"}, "ttl"),
        ({"to": "243851234567", "text": "x", "quiet_hours": "no"}, "quiet_hours"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_stores_nothing(  # type: ignore[no-untyped-def]
    client: TestClient, published, body, field: str
) -> None:
    answer = client.post("/v1/messages", json=body, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json()["field"] == field
    assert stored() == 0 and published == []


@pytest.mark.parametrize(
    "raw", [b"", b"not json", b"[]", b'{"to": 5}', b'{"text": "x"}', b"\xff\xfe"]
)
def test_garbage_body_is_422_not_500(client: TestClient, published, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    answer = client.post(
        "/v1/messages", content=raw, headers={**AUTH, "content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert stored() == 0 and published == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": "Bearer "}],
)
def test_without_a_valid_key_is_401(client: TestClient, published, headers) -> None:  # type: ignore[no-untyped-def]
    answer = client.post("/v1/messages", json={"to": "243851234567", "text": "x"}, headers=headers)
    assert answer.status_code == 401
    assert client.get("/v1/messages/abc", headers=headers).status_code == 401
    assert stored() == 0 and published == []


def test_api_is_off_without_keys(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMSQ_API_KEYS")
    reload_settings()
    answer = client.post("/v1/messages", json={"to": "243851234567", "text": "x"}, headers=AUTH)
    assert answer.status_code == 404
    assert stored() == 0


def test_unknown_id_is_404(client: TestClient) -> None:
    assert client.get("/v1/messages/0123456789abcdef", headers=AUTH).status_code == 404


def test_openapi_document_describes_the_api_and_hides_callbacks(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert {"post"} <= set(doc["paths"]["/v1/messages"])
    assert "get" in doc["paths"]["/v1/messages/{message_id}"]
    assert not [p for p in doc["paths"] if p.startswith("/dlr")]
    props = doc["components"]["schemas"]["MessageIn"]["properties"]
    assert {"to", "text", "provider", "sender", "send_at", "callback_url"} <= set(props)


def test_priority_ttl_and_quiet_hours_over_http(  # type: ignore[no-untyped-def]
    client: TestClient, published, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = client.post(
        "/v1/messages",
        json={"to": "243851234567", "text": "code 1", "priority": "high", "ttl": 120},
        headers=AUTH,
    ).json()["id"]
    body = client.get(f"/v1/messages/{one}", headers=AUTH).json()
    assert body["priority"] == "high" and body["ttl"] == 120 and body["expires_at"]
    plain = client.post("/v1/messages", json={"to": "243851234567", "text": "x"}, headers=AUTH)
    assert client.get(f"/v1/messages/{plain.json()['id']}", headers=AUTH).json()["priority"] == (
        "normal"
    )
    many = client.post(
        "/v1/messages", json={"to": ["380989361131"], "text": "sale"}, headers=AUTH
    ).json()["ids"]
    assert client.get(f"/v1/messages/{many[0]}", headers=AUTH).json()["priority"] == "bulk"
    monkeypatch.setenv("SMSQ_QUIET_HOURS", "00:00-23:59")  # quiet all day but a minute
    reload_settings()
    held = client.post(
        "/v1/messages", json={"to": ["380989361131"], "text": "sale"}, headers=AUTH
    ).json()["ids"][0]
    now = client.post(
        "/v1/messages",
        json={"to": ["380989361131"], "text": "sale", "quiet_hours": False},
        headers=AUTH,
    ).json()["ids"][0]
    held_status = client.get(f"/v1/messages/{held}", headers=AUTH).json()
    assert held_status["status"] == "scheduled" and held_status["note"].startswith("quiet hours")
    assert client.get(f"/v1/messages/{now}", headers=AUTH).json()["status"] == "queued"
