"""Keccel adapter against payloads from the Keccel document (httpx.MockTransport)."""

from __future__ import annotations

import json
from datetime import datetime

import httpx
import pytest

from producer.status import Status
from worker.gateways.base import (
    OutgoingMessage,
    PermanentProviderError,
    RetryableProviderError,
)
from worker.gateways.keccel.adapter import KeccelAdapter, parse_keccel_date

BASE = "https://api.keccel.com/sms/v2"


def adapter(handler) -> KeccelAdapter:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return KeccelAdapter(token="84hbYi6TU8Zu", sender="GUEST", base_url=BASE, client=client)


def msg(to: str = "243851234567") -> OutgoingMessage:
    return OutgoingMessage(ref="m1", to=to, text="Hello World")


def test_send_posts_documented_json_and_reads_message_id() -> None:
    seen: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["body"] = json.loads(request.content)
        return httpx.Response(
            200,
            json={
                "status": "SENT",
                "messageID": "123456",
                "description": "Message submitted to the network",
            },
        )

    [result] = adapter(handler).send([msg()])
    assert seen["url"] == f"{BASE}/message.asp"
    assert seen["body"] == {
        "token": "84hbYi6TU8Zu",
        "to": "243851234567",
        "from": "GUEST",
        "message": "Hello World",
    }
    assert result.status is Status.SENT
    assert result.provider_message_id == "123456"
    assert "token" not in result.raw


def test_invalid_token_is_permanent_and_names_no_secret() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "Rejected", "description": "Invalid token"})

    with pytest.raises(PermanentProviderError) as info:
        adapter(handler).send([msg()])
    assert "Invalid token" in str(info.value)
    assert "84hbYi6TU8Zu" not in str(info.value)


def test_rejected_number_rejects_only_that_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"status": "rejected", "description": "Invalid destination number"}
        )

    [result] = adapter(handler).send([msg()])
    assert result.status is Status.REJECTED
    assert "Invalid destination number" in (result.error or "")


@pytest.mark.parametrize("code", [500, 502, 503])
def test_5xx_is_retryable(code: int) -> None:
    with pytest.raises(RetryableProviderError):
        adapter(lambda r: httpx.Response(code, text="<html>down</html>")).send([msg()])


def test_429_carries_retry_after() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "7"})

    with pytest.raises(RetryableProviderError) as info:
        adapter(handler).send([msg()])
    assert info.value.retry_after == 7.0
    assert info.value.throttled


def test_timeout_is_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(RetryableProviderError):
        adapter(handler).send([msg()])


def test_html_page_instead_of_json_is_retryable() -> None:
    with pytest.raises(RetryableProviderError):
        adapter(lambda r: httpx.Response(200, text="<html>oops</html>")).send([msg()])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("DELIVERED", Status.DELIVERED),
        ("delivered", Status.DELIVERED),
        ("FAILED", Status.UNDELIVERED),
    ],
)
def test_delivery_pull_maps_status(raw: str, expected: Status) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"messageid": "123456", "status": raw})

    [report] = adapter(handler).fetch_status(["123456"])
    [request] = seen
    assert_get_carries_both_ways(
        request, "/delivery.asp", {"from": "GUEST", "token": "84hbYi6TU8Zu", "messageid": "123456"}
    )
    assert report.status is expected
    assert report.provider_message_id == "123456"


def assert_get_carries_both_ways(request: httpx.Request, path: str, params: dict) -> None:
    """The GET names its parameters in the query string and again as a JSON body
    (the seed SDK's way), so Keccel finds them whichever it reads."""
    assert request.method == "GET"
    assert request.url.path == f"/sms/v2{path}"
    assert dict(request.url.params) == params
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == params


def test_balance_request_carries_its_parameters_both_ways() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"balance": "645", "expiration": "", "status": "Active"})

    assert adapter(handler).fetch_balance().amount == 645.0
    [request] = seen
    assert_get_carries_both_ways(
        request, "/balance.asp", {"from": "GUEST", "token": "84hbYi6TU8Zu"}
    )


def test_delivery_error_for_a_bad_token_is_permanent() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "Error", "description": "Invalid token"})

    with pytest.raises(PermanentProviderError, match="Invalid token"):
        adapter(handler).fetch_status(["123456"])
    with pytest.raises(PermanentProviderError, match="Invalid token"):
        adapter(handler).fetch_balance()


def test_balance_tolerates_strings_case_and_keccel_dates() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"Balance": "645", "Expiration": "31-DEC-2021 06:46:17", "Status": "Active"}
        )

    balance = adapter(handler).fetch_balance()
    assert balance.amount == 645.0
    assert balance.expires_at == datetime(2021, 12, 31, 6, 46, 17)
    assert balance.active is True


def test_balance_empty_expiration_and_inactive() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"balance": 0, "expiration": "", "status": "inactive"})

    balance = adapter(handler).fetch_balance()
    assert balance.amount == 0.0
    assert balance.expires_at is None
    assert balance.active is False


def test_parse_keccel_date_variants() -> None:
    assert parse_keccel_date("31-Dec-2021 06:46:17") == datetime(2021, 12, 31, 6, 46, 17)
    assert parse_keccel_date("  ") is None
    assert parse_keccel_date(None) is None
    assert parse_keccel_date("not a date") is None


def test_callback_parsing() -> None:
    [report] = adapter(lambda r: httpx.Response(500)).parse_callback(
        {"messageID": "123456", "status": "DELIVERED"}
    )
    assert report.provider_message_id == "123456"
    assert report.status is Status.DELIVERED
    with pytest.raises(PermanentProviderError):
        adapter(lambda r: httpx.Response(500)).parse_callback({"status": "DELIVERED"})


@pytest.mark.parametrize(
    ("params", "body"),
    [
        ({}, b'{"messageID": "123456", "status": "FAILED"}'),
        ({"messageID": "123456"}, b'{"status": "FAILED"}'),
        ({"messageID": "123456", "status": "FAILED"}, b'{"messageID": "9", "status": "DELIVERED"}'),
        ({}, b'  {"messageid": 123456, "STATUS": "FAILED"}'),
    ],
    ids=["body only", "body fills in", "query wins", "number id, any case"],
)
def test_callback_reads_a_json_body_like_the_query(params: dict, body: bytes) -> None:
    [report] = adapter(lambda r: httpx.Response(500)).parse_callback(params, body)
    assert report.provider_message_id == "123456"
    assert report.status is Status.UNDELIVERED
    assert report.raw_status == "FAILED"


@pytest.mark.parametrize(
    "body", [b"", b"messageID=1&status=DELIVERED", b"[1, 2]", b'{"messageID": ', b"\xff{"]
)
def test_callback_body_that_is_no_json_object_gives_nothing(body: bytes) -> None:
    with pytest.raises(PermanentProviderError):
        adapter(lambda r: httpx.Response(500)).parse_callback({}, body)
