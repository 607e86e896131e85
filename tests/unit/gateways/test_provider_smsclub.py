"""SMSClub adapter against payloads from the SMSClub JSON document (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from producer.status import Status
from worker.gateways.base import (
    OutgoingMessage,
    PermanentProviderError,
    RetryableProviderError,
)
from worker.gateways.smsclub import SmsClubSettings
from worker.gateways.smsclub.adapter import DUPLICATE_NOTE, SmsClubAdapter

BASE = "https://im.smsclub.mobi"
TOKEN = "s3cr3t-Bearer-t0ken"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "smsclub"

Handler = Callable[[httpx.Request], httpx.Response]


def fixture(name: str) -> Any:
    data = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data.pop("_note", None)
    return data


def adapter(handler: Handler, sender: str | None = "VashZakaz") -> SmsClubAdapter:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return SmsClubAdapter(token=TOKEN, sender=sender, base_url=BASE, client=client)


def msg(to: str = "380989361131", ref: str = "m1", text: str = "test text") -> OutgoingMessage:
    return OutgoingMessage(ref=ref, to=to, text=text)


def recording(answer: Callable[[dict], httpx.Response], seen: list[dict]) -> Handler:
    """A handler that notes URL, auth header and JSON body of every request."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        entry = {
            "url": str(request.url),
            "method": request.method,
            "auth": request.headers.get("authorization"),
            "body": body,
        }
        seen.append(entry)
        return answer(entry)

    return handler


# -- send ------------------------------------------------------------------
def test_send_posts_documented_json_with_bearer_and_reads_id() -> None:
    seen: list[dict] = []
    handler = recording(lambda e: httpx.Response(200, json=fixture("send_response.json")), seen)
    [result] = adapter(handler).send([msg()])
    assert seen[0]["url"] == f"{BASE}/sms/send"
    assert seen[0]["method"] == "POST"
    assert seen[0]["auth"] == f"Bearer {TOKEN}"
    assert seen[0]["body"] == fixture("send_request.json")
    assert result.status is Status.SENT
    assert result.provider_message_id == "106"
    assert result.ref == "m1"
    assert TOKEN not in json.dumps(result.raw)


def test_send_maps_ids_by_phone_and_add_info_rejects_only_that_number() -> None:
    answer = {
        "success_request": {
            "info": {"201": "380501111112", "200": "380501111111"},
            "add_info": {"38012": "invalid number"},
        }
    }
    batch = [
        msg("380501111111", "a"),
        msg("38012", "b"),
        msg("380501111112", "c"),
    ]
    results = adapter(lambda r: httpx.Response(200, json=answer)).send(batch)
    assert [r.ref for r in results] == ["a", "b", "c"]
    assert [r.status for r in results] == [Status.SENT, Status.REJECTED, Status.SENT]
    assert results[0].provider_message_id == "200"
    assert results[2].provider_message_id == "201"
    assert results[1].provider_message_id is None
    assert "invalid number" in (results[1].error or "")


def test_same_phone_twice_gets_ids_in_order() -> None:
    answer = {"success_request": {"info": {"11": "380501111111", "10": "380501111111"}}}
    results = adapter(lambda r: httpx.Response(200, json=answer)).send(
        [msg("380501111111", "first"), msg("380501111111", "second")]
    )
    assert [(r.ref, r.provider_message_id) for r in results] == [("first", "10"), ("second", "11")]


def test_phone_missing_from_info_is_rejected_and_plus_prefix_tolerated() -> None:
    answer = {"success_request": {"info": {"300": "+380501111111"}}}
    ok, missing = adapter(lambda r: httpx.Response(200, json=answer)).send(
        [msg("380501111111", "a"), msg("380502222222", "b")]
    )
    assert ok.status is Status.SENT and ok.provider_message_id == "300"
    assert missing.status is Status.REJECTED
    assert missing.error


def test_all_numbers_refused_with_empty_info_list() -> None:
    answer = {"success_request": {"info": [], "add_info": {"380501111110": "rejected by operator"}}}
    [result] = adapter(lambda r: httpx.Response(200, json=answer)).send([msg("380501111110")])
    assert result.status is Status.REJECTED
    assert "rejected by operator" in (result.error or "")


def test_batch_over_100_is_split_and_mixed_texts_are_grouped() -> None:
    seen: list[dict] = []
    counter = iter(range(1000, 2000))

    def answer(entry: dict) -> httpx.Response:
        info = {str(next(counter)): phone for phone in entry["body"]["phone"]}
        return httpx.Response(200, json={"success_request": {"info": info}})

    batch = [msg(f"380500000{i:03d}", f"r{i}") for i in range(1, 151)]
    batch.insert(5, msg("380509999991", "other", text="another text"))
    results = adapter(recording(answer, seen)).send(batch)
    sizes = sorted(len(e["body"]["phone"]) for e in seen)
    assert sizes == [1, 50, 100]
    assert {e["body"]["message"] for e in seen} == {"test text", "another text"}
    other = next(e for e in seen if e["body"]["message"] == "another text")
    assert other["body"]["phone"] == ["380509999991"]
    assert [r.ref for r in results] == [m.ref for m in batch]
    assert all(r.status is Status.SENT and r.provider_message_id for r in results)
    assert len({r.provider_message_id for r in results}) == len(batch)


def test_per_message_sender_overrides_default() -> None:
    seen: list[dict] = []
    handler = recording(lambda e: httpx.Response(200, json=fixture("send_response.json")), seen)
    one = OutgoingMessage(ref="x", to="380989361131", text="t", sender="SMSClub")
    adapter(handler).send([one])
    assert seen[0]["body"]["src_addr"] == "SMSClub"


def test_no_sender_at_all_is_permanent_before_any_request() -> None:
    seen: list[dict] = []
    handler = recording(lambda e: httpx.Response(200, json=fixture("send_response.json")), seen)
    with pytest.raises(PermanentProviderError):
        adapter(handler, sender=None).send([msg()])
    assert seen == []


def test_453_duplicate_is_sent_not_failed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(453, json={"error": "Duplicate message"})

    results = adapter(handler).send([msg("380501111111", "a"), msg("380501111112", "b")])
    assert [r.ref for r in results] == ["a", "b"]
    for result in results:
        assert result.status is Status.SENT
        assert result.duplicate is True
        assert result.provider_message_id is None
        assert result.error == DUPLICATE_NOTE


def test_400_is_permanent_with_the_gateway_reason_truncated() -> None:
    long_reason = "Input validation error: " + "x" * 1000

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": long_reason})

    with pytest.raises(PermanentProviderError) as info:
        adapter(handler).send([msg()])
    assert "Input validation error" in str(info.value)
    assert len(str(info.value)) < 400
    assert info.value.code == "400"


def test_401_is_permanent_and_names_no_secret() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": f"User authentication error for {TOKEN}"})

    with pytest.raises(PermanentProviderError) as info:
        adapter(handler).send([msg()])
    assert info.value.code == "401"
    assert "authentication" in str(info.value)
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value.raw)


def test_429_is_throttled_with_retry_after() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "3"}, json={"error": "Too many"})

    with pytest.raises(RetryableProviderError) as info:
        adapter(handler).send([msg()])
    assert info.value.throttled
    assert info.value.retry_after == 3.0


@pytest.mark.parametrize("code", [500, 502, 503])
def test_5xx_is_retryable(code: int) -> None:
    with pytest.raises(RetryableProviderError):
        adapter(lambda r: httpx.Response(code, text="<html>down</html>")).send([msg()])


def test_timeout_is_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("slow", request=request)

    with pytest.raises(RetryableProviderError):
        adapter(handler).send([msg()])


@pytest.mark.parametrize(
    "body",
    [
        {"text": "<html>oops</html>"},
        {"json": {"unexpected": True}},
        {"json": ["a", "b"]},
        {"json": {"success_request": {"info": "oops"}}},
        {"json": {"success_request": {"info": {"1": "380989361131"}, "add_info": 5}}},
        {"json": None},
    ],
)
def test_odd_send_answers_are_retryable(body: dict) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "text" in body:
            return httpx.Response(200, text=body["text"])
        return httpx.Response(200, content=json.dumps(body["json"]).encode())

    with pytest.raises(RetryableProviderError):
        adapter(handler).send([msg()])


def test_upper_case_keys_are_tolerated() -> None:
    answer = {"SUCCESS_REQUEST": {"INFO": {"106": "380989361131"}}}
    [result] = adapter(lambda r: httpx.Response(200, json=answer)).send([msg()])
    assert result.provider_message_id == "106"


# -- status ------------------------------------------------------------------
def test_status_posts_documented_body_and_maps_enroute() -> None:
    seen: list[dict] = []
    handler = recording(lambda e: httpx.Response(200, json=fixture("status_response.json")), seen)
    [report] = adapter(handler).fetch_status(["106"])
    assert seen[0]["url"] == f"{BASE}/sms/status"
    assert seen[0]["auth"] == f"Bearer {TOKEN}"
    assert seen[0]["body"] == fixture("status_request.json")
    assert report.provider_message_id == "106"
    assert report.raw_status == "ENROUTE"
    assert report.status is Status.SENT


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ENROUTE", Status.SENT),
        ("DELIVRD", Status.DELIVERED),
        ("delivrd", Status.DELIVERED),
        ("EXPIRED", Status.EXPIRED),
        ("UNDELIV", Status.UNDELIVERED),
        ("Rejectd", Status.REJECTED),
        ("SOMETHING", None),
        ("", None),
    ],
)
def test_status_map(raw: str, expected: Status | None) -> None:
    answer = {"success_request": {"info": {"106": raw}}}
    [report] = adapter(lambda r: httpx.Response(200, json=answer)).fetch_status(["106"])
    assert report.status is expected
    assert report.raw_status == raw


def test_status_absent_ids_give_no_report_and_order_follows_request() -> None:
    answer = {"success_request": {"info": {"3": "DELIVRD", "1": "UNDELIV"}}}
    reports = adapter(lambda r: httpx.Response(200, json=answer)).fetch_status(["1", "2", "3"])
    assert [(r.provider_message_id, r.status) for r in reports] == [
        ("1", Status.UNDELIVERED),
        ("3", Status.DELIVERED),
    ]


def test_status_empty_info_gives_no_reports() -> None:
    answer = {"success_request": {"info": []}}
    assert adapter(lambda r: httpx.Response(200, json=answer)).fetch_status(["1"]) == []


def test_status_over_100_ids_is_chunked() -> None:
    seen: list[dict] = []

    def answer(entry: dict) -> httpx.Response:
        info = {pid: "DELIVRD" for pid in entry["body"]["id_sms"]}
        return httpx.Response(200, json={"success_request": {"info": info}})

    ids = [str(i) for i in range(1, 251)]
    reports = adapter(recording(answer, seen)).fetch_status(ids)
    assert [len(e["body"]["id_sms"]) for e in seen] == [100, 100, 50]
    assert [r.provider_message_id for r in reports] == ids


@pytest.mark.parametrize("code", [400, 401])
def test_status_http_errors_are_permanent(code: int) -> None:
    with pytest.raises(PermanentProviderError):
        adapter(lambda r: httpx.Response(code, json={"error": "nope"})).fetch_status(["1"])


def test_status_odd_shape_is_retryable() -> None:
    answer = {"success_request": {"info": "ENROUTE"}}
    with pytest.raises(RetryableProviderError):
        adapter(lambda r: httpx.Response(200, json=answer)).fetch_status(["1"])


# -- balance -----------------------------------------------------------------
def test_balance_reads_money_and_currency() -> None:
    seen: list[dict] = []
    handler = recording(lambda e: httpx.Response(200, json=fixture("balance_response.json")), seen)
    balance = adapter(handler).fetch_balance()
    assert seen[0]["url"] == f"{BASE}/sms/balance"
    assert seen[0]["method"] == "POST"
    assert seen[0]["auth"] == f"Bearer {TOKEN}"
    assert seen[0]["body"] is None
    assert balance.amount == 8111.17
    assert balance.unit == "UAH"
    assert balance.expires_at is None
    assert balance.active is None


@pytest.mark.parametrize(
    "info",
    [
        [{"money": "8111.1700"}, {"currency": "UAH"}],
        ['"money": "8111.1700"', '"currency": "UAH"'],
        {"Money": 8111.17, "Currency": "uah"},
    ],
)
def test_balance_tolerates_list_shapes(info: Any) -> None:
    answer = {"success_request": {"info": info}}
    balance = adapter(lambda r: httpx.Response(200, json=answer)).fetch_balance()
    assert balance.amount == 8111.17
    assert balance.unit == "UAH"


def test_balance_as_printed_in_the_document_is_read() -> None:
    literal = fixture("balance_response_as_documented.json")["body"]
    balance = adapter(lambda r: httpx.Response(200, text=literal)).fetch_balance()
    assert balance.amount == 8111.17
    assert balance.unit == "UAH"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>maintenance</html>"),
        httpx.Response(200, json={"success_request": {"info": {"currency": "UAH"}}}),
        httpx.Response(200, json={"success_request": {"info": {"money": "lots"}}}),
        httpx.Response(200, json=[1, 2]),
    ],
)
def test_balance_odd_answers_are_retryable(response: httpx.Response) -> None:
    with pytest.raises(RetryableProviderError):
        adapter(lambda r: response).fetch_balance()


def test_balance_401_is_permanent() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "User authentication error"})

    with pytest.raises(PermanentProviderError):
        adapter(handler).fetch_balance()


# -- senders -----------------------------------------------------------------
def test_senders_list() -> None:
    seen: list[dict] = []
    handler = recording(
        lambda e: httpx.Response(200, json=fixture("originator_response.json")), seen
    )
    assert adapter(handler).fetch_senders() == ["test1", "test2"]
    assert seen[0]["url"] == f"{BASE}/sms/originator"
    assert seen[0]["auth"] == f"Bearer {TOKEN}"


def test_senders_odd_shape_is_retryable() -> None:
    answer = {"success_request": {"info": 42}}
    with pytest.raises(RetryableProviderError):
        adapter(lambda r: httpx.Response(200, json=answer)).fetch_senders()


# -- misc --------------------------------------------------------------------
def test_no_callbacks() -> None:
    with pytest.raises(PermanentProviderError):
        adapter(lambda r: httpx.Response(500)).parse_callback({"id": "1", "status": "DELIVRD"})


def test_from_settings_and_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SMSQ_SMSCLUB_BASE_URL", "SMSQ_SMSCLUB_SENDER", "SMSQ_SMSCLUB_TIMEOUT_SECONDS"):
        monkeypatch.delenv(var, raising=False)
    settings = SmsClubSettings(
        _env_file=None, token=SecretStr(TOKEN), sender="SMSQ", timeout_seconds=4
    )
    built = SmsClubAdapter.from_settings(settings, client=httpx.Client())
    assert built.base_url == BASE
    assert built.sender == "SMSQ"
    assert built.timeout == 4
    assert built.max_batch == 100
    assert built.max_status_batch == 100
    assert built.supports_push is False
