"""KING SMS PRO adapter against payloads from the KING SMS PRO document (httpx.MockTransport)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from producer.status import TERMINAL, Status
from worker.gateways.base import (
    OutgoingMessage,
    PermanentProviderError,
    RetryableProviderError,
)
from worker.gateways.kingsms import KingSmsSettings
from worker.gateways.kingsms.adapter import (
    STATUS_DESCRIPTIONS,
    KingSmsAdapter,
    parse_kingsms_date,
    seconds_to_lome_midnight,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "kingsms"
BASE = "https://edok-api.kingsmspro.org/api/v1"
API_KEY = "GxAtSMBzwMIlWQMr3QFYTPmx3aGfdUSP"  # the document's placeholder key
CLIENT_ID = "1"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def adapter(handler, **kwargs: Any) -> KingSmsAdapter:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return KingSmsAdapter(
        api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE, client=client, **kwargs
    )


def form(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode(), keep_blank_values=True))


def msg(to: str = "22890443679", **kwargs: Any) -> OutgoingMessage:
    return OutgoingMessage(ref="m1", to=to, text="hello!", **kwargs)


def answer(payload: Any, status: int = 200):
    return lambda request: httpx.Response(status, json=payload)


def send_answer(code: str, with_id: bool = True) -> dict[str, Any]:
    inner = dict(fixture("send-result.json")["result"], status=code)
    if not with_id:
        inner.pop("messageId")
    return {"result": inner}


# -- send ------------------------------------------------------------------------
def test_send_posts_the_documented_form_and_headers() -> None:
    seen: dict[str, Any] = {}
    documented = fixture("send-request.json")

    def handler(request: httpx.Request) -> httpx.Response:
        seen["request"] = request
        return httpx.Response(200, json=fixture("send-result.json"))

    [result] = adapter(handler).send([msg()])
    request = seen["request"]
    assert request.method == "POST"
    assert str(request.url) == documented["url"]
    assert request.headers["APIKEY"] == documented["headers"]["APIKEY"]
    assert request.headers["CLIENTID"] == documented["headers"]["CLIENTID"]
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form(request) == documented["form"]
    assert result.status is Status.SENT
    assert result.accepted
    assert result.provider_message_id == "587854667"
    assert result.raw["sms_count"] == 1
    assert result.raw["currency"] == "XOF"


def test_send_reads_the_bare_result_object_too() -> None:
    [result] = adapter(answer(fixture("send-result.json")["result"])).send([msg()])
    assert result.provider_message_id == "587854667"
    assert result.status is Status.SENT


def test_flash_sender_and_dlr_url_are_sent() -> None:
    seen: dict[str, str] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(form(request))
        return httpx.Response(200, json=fixture("send-result.json"))

    message = msg(to="+22890443679", flash=True, sender="SHOP", dlr_url="https://me.tg/dlr?x=1")
    adapter(handler).send([message])
    assert seen == {
        "from": "SHOP",
        "to": "22890443679",
        "type": "1",
        "message": "hello!",
        "dlr": "yes",
        "url": "https://me.tg/dlr?x=1",
    }


def test_default_sender_is_settings_then_king_sms() -> None:
    senders: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        senders.append(form(request)["from"])
        return httpx.Response(200, json=fixture("send-result.json"))

    adapter(handler).send([msg()])
    adapter(handler, sender="ACME").send([msg()])
    assert senders == ["KING SMS", "ACME"]


def test_sender_over_11_characters_is_rejected_without_a_request() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json=fixture("send-result.json"))

    [result] = adapter(handler).send([msg(sender="TWELVE CHARS")])
    assert result.status is Status.REJECTED
    assert "11" in (result.error or "")
    assert calls == []


@pytest.mark.parametrize("code", ["BLO", "INV", "LEN", "DUP"])
def test_message_level_codes_reject_that_message(code: str) -> None:
    [result] = adapter(answer(send_answer(code))).send([msg()])
    assert result.status is Status.REJECTED
    assert result.provider_message_id == "587854667"
    assert code in (result.error or "")
    assert STATUS_DESCRIPTIONS[code] in (result.error or "")
    assert result.duplicate is (code == "DUP")


@pytest.mark.parametrize("code", ["NSF", "IPV", "INF", "NCR", "NPZ"])
def test_account_level_codes_are_permanent(code: str) -> None:
    with pytest.raises(PermanentProviderError) as info:
        adapter(answer(send_answer(code, with_id=False))).send([msg()])
    assert info.value.code == code
    assert API_KEY not in str(info.value)


@pytest.mark.parametrize("code", ["MAX", "MAP"])
def test_daily_maximum_is_retryable_after_midnight_in_lome(code: str) -> None:
    with pytest.raises(RetryableProviderError) as info:
        adapter(answer(send_answer(code, with_id=False))).send([msg()])
    assert info.value.code == code
    assert info.value.throttled
    assert 0 < (info.value.retry_after or 0) <= 24 * 3600


def test_seconds_to_lome_midnight() -> None:
    assert seconds_to_lome_midnight(datetime(2024, 5, 1, 23, 0, tzinfo=UTC)) == 3600
    assert seconds_to_lome_midnight(datetime(2024, 5, 1, 0, 0)) == 24 * 3600


def test_delivered_at_send_is_accepted() -> None:
    [result] = adapter(answer(send_answer("DLV"))).send([msg()])
    assert result.status is Status.DELIVERED
    assert result.accepted


def test_accepted_status_without_message_id_is_retryable() -> None:
    with pytest.raises(RetryableProviderError):
        adapter(answer(send_answer("ACT", with_id=False))).send([msg()])


@pytest.mark.parametrize("status", [401, 403])
def test_bad_credentials_are_permanent_and_name_no_secret(status: int) -> None:
    body = {"status": "error", "message": f"Invalid API key {API_KEY}"}
    with pytest.raises(PermanentProviderError) as info:
        adapter(answer(body, status)).send([msg()])
    assert info.value.code == str(status)
    assert API_KEY not in str(info.value)


def test_other_4xx_is_permanent_with_the_body_message_truncated() -> None:
    body = {"status": "error", "message": "Missing parameter: to " + "x" * 500 + API_KEY}
    with pytest.raises(PermanentProviderError) as info:
        adapter(answer(body, 400)).send([msg()])
    text = str(info.value)
    assert "Missing parameter: to" in text
    assert len(text) < 300
    assert API_KEY not in text
    assert info.value.code == "400"


def test_4xx_html_body_is_permanent() -> None:
    handler = lambda r: httpx.Response(422, text="<html>Unprocessable</html>")  # noqa: E731
    with pytest.raises(PermanentProviderError, match="Unprocessable"):
        adapter(handler).send([msg()])


@pytest.mark.parametrize("code", [500, 502, 503])
def test_5xx_is_retryable(code: int) -> None:
    with pytest.raises(RetryableProviderError):
        adapter(lambda r: httpx.Response(code, text="<html>down</html>")).send([msg()])


def test_429_carries_retry_after() -> None:
    handler = lambda r: httpx.Response(429, headers={"Retry-After": "12"})  # noqa: E731
    with pytest.raises(RetryableProviderError) as info:
        adapter(handler).send([msg()])
    assert info.value.retry_after == 12.0
    assert info.value.throttled


def test_timeout_is_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(RetryableProviderError):
        adapter(handler).send([msg()])


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>oops</html>"),
        httpx.Response(200, json=["unexpected"]),
        httpx.Response(200, json="ACT"),
        httpx.Response(200, json={}),
        httpx.Response(200, json={"result": None}),
    ],
)
def test_unexpected_send_answers_are_retryable(response: httpx.Response) -> None:
    with pytest.raises(RetryableProviderError):
        adapter(lambda r: response).send([msg()])


def test_error_answer_about_the_account_is_permanent() -> None:
    body = {"status": "error", "message": "Insufficient balance"}
    with pytest.raises(PermanentProviderError, match="Insufficient balance"):
        adapter(answer(body)).send([msg()])


def test_error_answer_about_the_message_rejects_it() -> None:
    body = {"status": "error", "message": "Invalid phone number"}
    [result] = adapter(answer(body)).send([msg()])
    assert result.status is Status.REJECTED
    assert "Invalid phone number" in (result.error or "")


def test_temporary_error_answer_is_retryable() -> None:
    body = {"status": "error", "message": "Service under maintenance, try again later"}
    with pytest.raises(RetryableProviderError):
        adapter(answer(body)).send([msg()])


def test_raw_never_holds_credentials() -> None:
    payload = send_answer("ACT")
    payload["result"].update({"APIKEY": API_KEY, "clientId": "1", "note": f"key {API_KEY}"})
    [result] = adapter(answer(payload)).send([msg()])
    assert "apikey" not in result.raw and "clientid" not in result.raw
    assert API_KEY not in json.dumps(result.raw)


# -- status map ------------------------------------------------------------------
def test_status_map_covers_every_code_of_appendix_a() -> None:
    codes = set(fixture("message-statuses.json"))
    assert len(codes) == 24
    assert codes == set(KingSmsAdapter.status_map)
    assert codes == set(STATUS_DESCRIPTIONS)
    assert all(KingSmsAdapter.status_map[c] is not None for c in codes)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ACT", Status.SENT),
        ("BUF", Status.SENT),
        ("DLG", Status.SENT),
        ("IPR", Status.SENT),
        ("ITM", Status.SENT),
        ("PACT", Status.SENT),
        ("NRC", Status.SENT),
        ("DLV", Status.DELIVERED),
        ("DLA", Status.DELIVERED),
        ("PAPP", Status.DELIVERED),
        ("ABS", Status.UNDELIVERED),
        ("ERD", Status.UNDELIVERED),
        ("EXP", Status.EXPIRED),
        ("BLO", Status.REJECTED),
        ("MAX", Status.REJECTED),
        ("NSF", Status.FAILED),
        ("dlv", Status.DELIVERED),
        (" erd ", Status.UNDELIVERED),
        ("WHAT", None),
    ],
)
def test_map_status(code: str, expected: Status | None) -> None:
    assert KingSmsAdapter.map_status(adapter(answer({})), code) == expected


def test_only_delivery_codes_are_pending_or_terminal_as_documented() -> None:
    pending = {c for c, s in KingSmsAdapter.status_map.items() if s not in TERMINAL}
    assert pending == {"ACT", "BUF", "DLG", "IPR", "ITM", "PACT", "NRC"}


# -- trace -----------------------------------------------------------------------
def test_trace_posts_message_id_and_reads_the_documented_answer() -> None:
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["form"] = form(request)
        seen["apikey"] = request.headers.get("APIKEY")
        return httpx.Response(200, json=fixture("trace-result.json"))

    [report] = adapter(handler).fetch_status(["587854667"])
    assert seen == {
        "url": f"{BASE}/sms/trace",
        "form": {"messageId": "587854667"},
        "apikey": API_KEY,
    }
    assert report.provider_message_id == "587854667"
    assert report.status is Status.SENT
    assert report.raw_status == "ACT"
    assert report.to == "22890443679"


@pytest.mark.parametrize(
    ("code", "expected"), [("DLV", Status.DELIVERED), ("erd", Status.UNDELIVERED)]
)
def test_trace_final_status_bare_answer(code: str, expected: Status) -> None:
    inner = dict(fixture("trace-result.json")["result"], status=code)
    [report] = adapter(answer(inner)).fetch_status(["587854667"])
    assert report.status is expected


def test_trace_unknown_code_says_nothing_new() -> None:
    inner = dict(fixture("trace-result.json")["result"], status="ZZZ")
    [report] = adapter(answer(inner)).fetch_status(["587854667"])
    assert report.status is None
    assert report.raw_status == "ZZZ"


def test_trace_error_answer_is_permanent_and_unknown_shape_retryable() -> None:
    with pytest.raises(PermanentProviderError, match="not found"):
        adapter(answer({"status": "error", "message": "Message not found"})).fetch_status(["1"])
    with pytest.raises(PermanentProviderError):
        adapter(answer({"message": "Message not found"}, 404)).fetch_status(["1"])
    with pytest.raises(RetryableProviderError):
        adapter(answer({"sender": "KING SMS"})).fetch_status(["1"])
    with pytest.raises(RetryableProviderError):
        adapter(answer([1, 2])).fetch_status(["1"])


# -- reports ---------------------------------------------------------------------
def test_reports_post_dates_and_type_and_read_a_list() -> None:
    seen: dict[str, str] = {}
    records = [
        {"messageId": "1", "destination": "22890443679", "status": "DLV"},
        {"MESSAGEID": 2, "Destination": "22890443670", "Status": "inv"},
        {"message_id": "3", "status": "ACT", "date": "2024-05-02 10:11:12"},
        "garbage",
        {"status": "DLV"},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(form(request))
        seen["url"] = str(request.url)
        return httpx.Response(200, json=records)

    reports = adapter(handler).fetch_reports(date(2024, 5, 1), date(2024, 5, 2))
    assert seen == {
        "url": f"{BASE}/sms/reports",
        "date_start": "2024-05-01",
        "date_end": "2024-05-02",
        "type": "2",
    }
    assert [(r.provider_message_id, r.status) for r in reports] == [
        ("1", Status.DELIVERED),
        ("2", Status.REJECTED),
        ("3", Status.SENT),
    ]
    assert reports[0].to == "22890443679"
    assert reports[2].occurred_at == datetime(2024, 5, 2, 10, 11, 12)


@pytest.mark.parametrize("wrapper", ["result", "data", "reports", "Data"])
def test_reports_read_wrapped_lists(wrapper: str) -> None:
    body = {"status": "success", wrapper: [{"messageId": "9", "status": "EXP"}]}
    [report] = adapter(answer(body)).fetch_reports(date(2024, 5, 1), date(2024, 5, 1), type=1)
    assert report.status is Status.EXPIRED


def test_reports_empty_and_bad_shapes() -> None:
    assert adapter(answer([])).fetch_reports(date(2024, 5, 1), date(2024, 5, 1)) == []
    assert adapter(answer({"result": []})).fetch_reports(date(2024, 5, 1), date(2024, 5, 1)) == []
    with pytest.raises(RetryableProviderError):
        adapter(answer("nope")).fetch_reports(date(2024, 5, 1), date(2024, 5, 1))
    with pytest.raises(PermanentProviderError, match="Invalid date"):
        adapter(answer({"status": "error", "message": "Invalid date"})).fetch_reports(
            date(2024, 5, 1), date(2024, 5, 1)
        )


def test_reports_refuse_reversed_dates_and_bad_type_without_a_request() -> None:
    calls: list[httpx.Request] = []
    client = adapter(lambda r: calls.append(r) or httpx.Response(200, json=[]))
    with pytest.raises(ValueError):
        client.fetch_reports(date(2024, 5, 2), date(2024, 5, 1))
    with pytest.raises(ValueError):
        client.fetch_reports(date(2024, 5, 1), date(2024, 5, 2), type=3)
    assert calls == []


# -- balance ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "amount", "unit"),
    [
        ({"balance": "1250.50", "currency": "XOF", "client_id": "1"}, 1250.5, "XOF"),
        ({"result": {"Solde": 300, "Currency": "xof"}}, 300.0, "XOF"),
        ({"data": {"credit": " 42 "}}, 42.0, "XOF"),
        ({"status": "success", "result": {"amount": "7,5", "devise": "EUR"}}, 7.5, "EUR"),
    ],
)
def test_balance_tolerates_undocumented_shapes(body: Any, amount: float, unit: str) -> None:
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["method"] = request.method
        seen["clientid"] = request.headers.get("CLIENTID")
        return httpx.Response(200, json=body)

    balance = adapter(handler).fetch_balance()
    assert seen == {"url": f"{BASE}/account/details", "method": "POST", "clientid": CLIENT_ID}
    assert balance.amount == amount
    assert balance.unit == unit
    assert "client_id" not in (balance.raw or {})


def test_balance_without_a_number() -> None:
    with pytest.raises(RetryableProviderError):
        adapter(answer({"currency": "XOF"})).fetch_balance()
    with pytest.raises(PermanentProviderError, match="disabled"):
        adapter(answer({"status": "error", "message": "Account disabled"})).fetch_balance()


# -- callback --------------------------------------------------------------------
def test_callback_from_query_params() -> None:
    [report] = adapter(answer({})).parse_callback(
        {"messageId": "587854667", "status": "DLV", "destination": "22890443679"}
    )
    assert report.provider_message_id == "587854667"
    assert report.status is Status.DELIVERED
    assert report.to == "22890443679"


def test_callback_from_form_body_and_json_body() -> None:
    client = adapter(answer({}))
    [from_form] = client.parse_callback({}, b"message_id=11&STATUS=erd")
    assert (from_form.provider_message_id, from_form.status) == ("11", Status.UNDELIVERED)
    [from_json] = client.parse_callback({}, json.dumps({"msgid": 12, "Status": "EXP"}).encode())
    assert (from_json.provider_message_id, from_json.status) == ("12", Status.EXPIRED)
    [wrapped] = client.parse_callback({}, b'{"result": {"id": "13", "status": "DLV"}}')
    assert wrapped.status is Status.DELIVERED
    many = client.parse_callback(
        {}, b'[{"messageId": "1", "status": "DLV"}, {"messageId": "2", "status": "ERD"}]'
    )
    assert [r.status for r in many] == [Status.DELIVERED, Status.UNDELIVERED]


@pytest.mark.parametrize(
    ("params", "body"),
    [({"status": "DLV"}, b""), ({"messageId": "1"}, b""), ({}, b"not json {"), ({}, b"[]")],
)
def test_callback_without_id_or_status_is_refused(params: dict[str, str], body: bytes) -> None:
    with pytest.raises(PermanentProviderError):
        adapter(answer({})).parse_callback(params, body)


# -- misc ------------------------------------------------------------------------
def test_from_settings_reads_both_secrets() -> None:
    seen: dict[str, str] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["apikey"] = request.headers["APIKEY"]
        seen["clientid"] = request.headers["CLIENTID"]
        seen["url"] = str(request.url)
        return httpx.Response(200, json={"balance": "1"})

    settings = KingSmsSettings(api_key="k-123456", client_id="77", sender="SHOP")
    client = httpx.Client(transport=httpx.MockTransport(handler))
    built = KingSmsAdapter.from_settings(settings, client=client)
    built.fetch_balance()
    assert seen == {"apikey": "k-123456", "clientid": "77", "url": f"{BASE}/account/details"}
    assert built.sender == "SHOP"
    assert "k-123456" not in repr(settings)


def test_limits_are_declared() -> None:
    client = adapter(answer({}))
    assert client.max_batch == 1
    assert client.max_status_batch == 1
    assert client.supports_push


def test_parse_kingsms_date_variants() -> None:
    assert parse_kingsms_date("2024-05-01 10:00:00") == datetime(2024, 5, 1, 10, 0)
    assert parse_kingsms_date("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, 0)
    assert parse_kingsms_date("01/05/2024 10:00") == datetime(2024, 5, 1, 10, 0)
    assert parse_kingsms_date("") is None
    assert parse_kingsms_date("tomorrow") is None


def test_send_and_trace_read_a_result_under_a_success_envelope() -> None:
    send = {"status": "success", "result": fixture("send-result.json")["result"]}
    [result] = adapter(answer(send)).send([msg()])
    assert (result.status, result.provider_message_id) == (Status.SENT, "587854667")
    trace = {"status": True, "data": dict(fixture("trace-result.json")["result"], status="DLV")}
    [report] = adapter(answer(trace)).fetch_status(["587854667"])
    assert report.status is Status.DELIVERED


def test_send_refusal_code_inside_the_envelope_still_raises() -> None:
    with pytest.raises(PermanentProviderError):
        adapter(answer({"status": "ok", "result": {"status": "NSF"}})).send([msg()])
