"""The Keccel simulator reads its parameters from the query string and from a JSON
body, on every path, and answers a bad token as Keccel's document says.

The document says "both requests and responses are transmitted in JSON format"
and does not say where the GETs' parameters go; the seed SDK `pykeccelsms` sends
them as a JSON body, smsq's adapter both ways (tests/integration/test_keccel_sdk.py
runs the SDK itself). In-process (Starlette's TestClient), no network.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from worker.gateways.keccel.simulator import KeccelSim
from worker.gateways.sandbox.app import Sandbox
from worker.gateways.sandbox.base import sandbox_credentials

TOKEN = sandbox_credentials("keccel")["token"]


@pytest.fixture
def sandbox() -> Iterator[tuple[TestClient, KeccelSim]]:
    box = Sandbox(delivery_seconds=60.0)  # messages stay pending: no timing in these tests
    sim = box.sims["keccel"]
    assert isinstance(sim, KeccelSim)
    with TestClient(box.app) as client:
        yield client, sim


def call(client: TestClient, method: str, path: str, how: str, params: dict[str, Any]) -> Any:
    """One request with `params` in the query string, a JSON body, or both."""
    query = params if how in ("query", "both") else None
    body = json.dumps(params).encode() if how in ("json", "both") else None
    headers = {"content-type": "application/json"} if body else {}
    answer = client.request(method, f"/keccel/{path}", params=query, content=body, headers=headers)
    assert answer.status_code == 200  # Keccel's errors are in the JSON, never the HTTP status
    return answer.json()


def send(client: TestClient, how: str = "json", **over: str) -> Any:
    params = {"token": TOKEN, "to": "243851234567", "from": "SHOP", "message": "Hi", **over}
    return call(client, "POST", "message.asp", how, params)


HOWS = ["query", "json", "both"]


@pytest.mark.parametrize("how", HOWS)
def test_send_reads_its_parameters_either_way(sandbox, how: str) -> None:  # type: ignore[no-untyped-def]
    client, sim = sandbox
    answer = send(client, how)
    assert answer["status"] == "SENT"
    kept = sim.messages[answer["messageID"]]
    assert (kept.to, kept.sender, kept.text) == ("243851234567", "SHOP", "Hi")


@pytest.mark.parametrize("how", HOWS)
def test_delivery_reads_its_parameters_either_way(sandbox, how: str) -> None:  # type: ignore[no-untyped-def]
    client, _ = sandbox
    message_id = send(client)["messageID"]
    params = {"from": "SHOP", "token": TOKEN, "messageid": message_id}
    assert call(client, "GET", "delivery.asp", how, params) == {
        "messageid": message_id,
        "status": "SENT",
    }


@pytest.mark.parametrize("how", HOWS)
def test_balance_reads_its_parameters_either_way(sandbox, how: str) -> None:  # type: ignore[no-untyped-def]
    client, sim = sandbox
    sim.balance = 645
    answer = call(client, "GET", "balance.asp", how, {"from": "SHOP", "token": TOKEN})
    assert answer == {"balance": "645", "expiration": "", "status": "Active"}


def test_json_body_fields_win_over_the_query_and_names_ignore_case(sandbox) -> None:  # type: ignore[no-untyped-def]
    client, _ = sandbox
    message_id = send(client)["messageID"]
    answer = client.request(
        "GET",
        "/keccel/delivery.asp",
        params={"token": "stale", "messageid": "1"},
        json={"Token": TOKEN, "messageID": message_id},
    )
    assert answer.json() == {"messageid": message_id, "status": "SENT"}


@pytest.mark.parametrize("how", HOWS)
def test_bad_token_is_answered_as_the_document_says(sandbox, how: str) -> None:  # type: ignore[no-untyped-def]
    client, sim = sandbox
    refused = {"status": "Rejected", "description": "Invalid token"}
    assert send(client, how, token="wrong") == refused
    error = {"status": "Error", "description": "Invalid token"}
    params = {"from": "SHOP", "token": "wrong"}
    assert call(client, "GET", "balance.asp", how, params) == error
    assert call(client, "GET", "delivery.asp", how, {**params, "messageid": "1"}) == error
    assert sim.messages == {} and sim.balance == 100000.0


@pytest.mark.parametrize(
    "body", [b"[1, 2]", b'"token"', b"token=x&from=y", b'{"token": ', b"\xff\xfe{", b"[" * 5000]
)
@pytest.mark.parametrize("path", ["message.asp", "delivery.asp", "balance.asp"])
def test_a_body_that_is_no_json_object_is_refused(sandbox, path: str, body: bytes) -> None:  # type: ignore[no-untyped-def]
    client, sim = sandbox
    method = "POST" if path == "message.asp" else "GET"
    answer = client.request(method, f"/keccel/{path}", params={"token": TOKEN}, content=body)
    assert answer.status_code == 200
    status = "Rejected" if path == "message.asp" else "Error"
    assert answer.json() == {"status": status, "description": "Invalid JSON"}
    assert sim.messages == {}


def test_missing_send_parameter_is_named(sandbox) -> None:  # type: ignore[no-untyped-def]
    client, _ = sandbox
    answer = send(client, "both", to="  ")
    assert answer == {"status": "Rejected", "description": "Missing parameter: to"}
