"""The OpenAPI document says what the HTTP API does, and the API keeps to it (issue 15,
point 9): the bugs schemathesis found, one test each, and the document's rules
checked against the producer's own checks. Real SQLite store; publishing recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from producer import api as producer_api
from producer import send_bulk
from producer.api import MAX_BULK_IDEMPOTENCY_KEY
from producer.errors import InvalidMessage
from producer.suppressions import REASON_PATTERN, check_reason
from producer.traffic import PRIORITIES
from producer.validation import NOT_BLANK_PATTERN, WHITESPACE_CLASS
from tests.unit.conftest import isolate, restore
from worker.edge.api_schema import SENDER_SCHEMA, MessageIn

KEY = "schema-test-key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}
DRC = "243851234567"


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[list[list[str]]]:  # type: ignore[no-untyped-def]
    isolate(
        monkeypatch,
        tmp_path,
        SMSQ_KECCEL_TOKEN="k",
        SMSQ_KINGSMS_API_KEY="a",
        SMSQ_KINGSMS_CLIENT_ID="c",
        SMSQ_API_KEYS=f"shop:{KEY}",
        SMSQ_API_KEY_LIMIT="off",
        SMSQ_RECIPIENT_LIMIT="off",
        SMSQ_HTTP_MAX_BULK="7",
    )
    calls: list[list[str]] = []
    monkeypatch.setattr(producer_api, "publish_send", lambda ids, countdown=None: calls.append(ids))
    yield calls
    restore(monkeypatch)


@pytest.fixture
def client(published) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    from worker.web import app

    with TestClient(app) as c:
        yield c


def post(client: TestClient, **body: object):  # type: ignore[no-untyped-def]
    return client.post("/v1/messages", json={"to": DRC, "text": "hi", **body}, headers=AUTH)


# -- bugs the fuzzer found ------------------------------------------------------------


def test_a_wrong_method_names_every_method_of_the_path(client: TestClient) -> None:
    """Starlette's Allow named only the first route of the path (POST), not GET too."""
    answer = client.options("/v1/suppressions", headers=AUTH)
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, POST"
    assert answer.json() == {"error": "Method Not Allowed"}
    assert client.put("/v1/messages/abc", headers=AUTH).headers["allow"] == "GET"


def test_a_body_that_is_not_utf8_is_a_422_on_body(client: TestClient, published) -> None:  # type: ignore[no-untyped-def]
    """It was a 400 `{"detail": ...}`, in no documented shape."""
    answer = client.post(
        "/v1/messages",
        content=b'{"to": "\xff\xfe", "text": "x"}',
        headers={**AUTH, "content-type": "application/json"},
    )
    assert answer.status_code == 422
    assert answer.json()["field"] == "body" and answer.json()["rule"] == "is not valid JSON"
    assert published == []


def test_an_unknown_path_answers_in_the_error_shape(client: TestClient) -> None:
    answer = client.get("/nowhere")
    assert answer.status_code == 404 and answer.json() == {"error": "Not Found"}


def test_ttl_is_a_json_integer(client: TestClient) -> None:
    """60.0 is an integer to JSON Schema (and to send_sms); "60", true and 6e28 are not
    (the document's maximum was lost, written as `le`)."""
    assert post(client, ttl=60.0).status_code == 201
    for bad in ("60", True, 65946949758816457719027859456, 1.5, 0):
        answer = post(client, ttl=bad)
        assert answer.status_code == 422 and answer.json()["field"] == "ttl", bad
    ttl = client.get("/openapi.json").json()["components"]["schemas"]["MessageIn"]
    integer = ttl["properties"]["ttl"]["anyOf"][0]
    assert integer["type"] == "integer" and integer["maximum"] == 7 * 24 * 3600


def test_provider_and_priority_are_the_documented_names_exactly(client: TestClient) -> None:
    """The document lists them as enums; "KECCEL " or "High" would pass send_sms's
    lenient check and make the document lie."""
    assert post(client, provider="keccel", priority="high").status_code == 201
    for field, bad in (("provider", "KECCEL"), ("provider", "smsclub"), ("priority", "High")):
        answer = post(client, **{field: bad})
        assert answer.status_code == 422 and answer.json()["field"] == field, bad
    rule = post(client, provider="smsclub").json()["rule"]
    assert rule == "must be one of: keccel, kingsms (the configured gateways)"
    enum = MessageIn.model_json_schema()["properties"]["priority"]["anyOf"][0]["enum"]
    assert tuple(enum) == PRIORITIES


def test_an_empty_list_and_a_list_over_the_bulk_limit_are_422_on_to(client: TestClient) -> None:
    assert post(client, to=[]).json()["field"] == "to"
    assert post(client, to=[DRC] * 8).json()["field"] == "to"
    assert post(client, to=[DRC] * 7).status_code == 201


def test_a_bulk_idempotency_key_has_one_limit_whatever_the_count(published) -> None:  # type: ignore[no-untyped-def]
    """It depended on the number of numbers (`key:index` within 200), which no schema
    can state; now 194 for every list, the room of the longest index."""
    assert MAX_BULK_IDEMPOTENCY_KEY == 194
    assert len(send_bulk([DRC], "x", idempotency_key="k" * 194)) == 1
    with pytest.raises(InvalidMessage) as refused:
        send_bulk([DRC], "x", idempotency_key="k" * 195)
    assert refused.value.field == "idempotency_key" and "194" in refused.value.rule


def test_a_reason_may_hold_emoji_sequences_but_no_controls() -> None:
    """`str.isprintable` refused U+200D (emoji sequences) and no-break spaces as
    "control characters", a rule the document could not state."""
    assert check_reason("STOP 👨\u200d👩\u200d👧") == "STOP 👨\u200d👩\u200d👧"
    assert check_reason("non\xa0merci") == "non\xa0merci"
    assert check_reason(" STOP\t") == "STOP"
    for bad in ("a\tb", "a\x1bb", "a\u202eb", "a\u2028b", "a\x85b"):
        with pytest.raises(InvalidMessage):
            check_reason(bad)


# -- the document's rules are the checks' rules ---------------------------------------

BLANKS = " \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000"
SAMPLES = [
    "", "a", " a ", "\x00", "a\x00", "x\u200bx", "\ufeff", "\u180e", "é", "A B",
    *BLANKS, *(f"{b}x{b}" for b in BLANKS), "\t\t", "\u3000\u3000a",
]  # fmt: skip


def test_the_blank_class_is_what_strip_removes() -> None:
    blank = re.compile(f"[{WHITESPACE_CLASS}]")
    assert all(bool(blank.fullmatch(chr(c))) == chr(c).isspace() for c in range(0x110000))


@pytest.mark.parametrize("value", SAMPLES)
def test_not_blank_pattern_matches_the_empty_check(value: str) -> None:
    schema = jsonschema_rs.validator_for({"type": "string", "pattern": NOT_BLANK_PATTERN})
    assert schema.is_valid(value) == (bool(value.strip()) and "\x00" not in value)


@pytest.mark.parametrize(
    "value",
    ["SHOP", " SHOP ", "+243851234567", "123", "12", "1-2", "SHOP-24 & CO", "A" * 11,
     "A" * 12, " " + "A" * 11 + "\t", "+12", "SH\u00d6P", "", "  ", "-", "a b", "1 2"],
)  # fmt: skip
def test_sender_schema_matches_check_sender(value: str) -> None:
    from producer.validation import check_sender

    try:
        check_sender(value, "keccel")
        accepted = True
    except InvalidMessage:
        accepted = False
    assert jsonschema_rs.validator_for(SENDER_SCHEMA).is_valid(value) == accepted


@pytest.mark.parametrize("value", [*SAMPLES, "a\tb", "a\u202eb", "STOP 👍🏽", "\x85a", "a\x1f"])
def test_reason_pattern_matches_check_reason(value: str) -> None:
    try:
        check_reason(value)
        accepted = True
    except InvalidMessage:
        accepted = False
    assert jsonschema_rs.validator_for({"pattern": REASON_PATTERN}).is_valid(value) == accepted


def test_every_api_operation_documents_its_errors_and_the_key(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            if path.startswith("/v1/"):
                assert operation["security"] == [{"apiKey": []}], (method, path)
                assert {"401", "404", "422", "503"} <= codes, (method, path)
            if method == "post":
                assert "413" in codes, path
    assert "429" in doc["paths"]["/v1/messages"]["post"]["responses"]
    assert "503" in doc["paths"]["/healthz"]["get"]["responses"]


def test_the_document_follows_the_settings(client: TestClient) -> None:
    message = client.get("/openapi.json").json()["components"]["schemas"]["MessageIn"]
    bulk = next(o for o in message["properties"]["to"]["anyOf"] if o.get("type") == "array")
    assert bulk["maxItems"] == 7
    assert message["properties"]["provider"]["anyOf"][0]["enum"] == ["keccel", "kingsms"]
    # Flash: only KING SMS PRO sends it, and the default gateway (keccel) does not.
    flash = message["allOf"][0]["then"]
    assert flash["properties"]["provider"]["enum"] == ["kingsms"] and flash["required"]
    assert post(client, flash=True).status_code == 422
    assert post(client, flash=True, provider="kingsms", to="22890112345").status_code == 201
    assert message["then"]["properties"]["idempotency_key"]["maxLength"] == 194
