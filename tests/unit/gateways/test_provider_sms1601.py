"""1601SMS adapter against answers from the 1601SMS document (httpx.MockTransport)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from producer.limits import limits_for
from producer.status import Status
from worker.gateways.base import (
    OutgoingMessage,
    PermanentProviderError,
    RetryableProviderError,
)
from worker.gateways.sms1601 import Sms1601Settings
from worker.gateways.sms1601.adapter import (
    ACCOUNT,
    MESSAGE,
    RETRYABLE,
    SMS1601_ERRORS,
    Sms1601Adapter,
    parse_sms1601_date,
    to_gateway_datum,
)

BASE = "http://217.19.227.48/module"
PASSWORD = "s3cret-pass"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sms1601"
EXAMPLES = json.loads((FIXTURES / "examples.json").read_text(encoding="utf-8"))
DOC_ERRORS = json.loads((FIXTURES / "error-codes.json").read_text(encoding="utf-8"))

Handler = Callable[[httpx.Request], httpx.Response]


def adapter(handler: Handler, **kwargs) -> Sms1601Adapter:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    options = {"username": "klant1", "password": PASSWORD, "sender": "SHOP", **kwargs}
    return Sms1601Adapter(base_url=BASE, client=client, **options)


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode(), keep_blank_values=True).items()}


def msg(ref: str = "m1", to: str = "32478123456", text: str = "this is a test", **kw):
    return OutgoingMessage(ref=ref, to=to, text=text, **kw)


def answer(text: str) -> Handler:
    return lambda request: httpx.Response(200, text=text)


# -- send --------------------------------------------------------------------
def test_send_posts_a_form_and_reads_the_documented_ok() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text=EXAMPLES["send_answer_with_delivery"])

    [result] = adapter(handler).send([msg()])
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/gateway.php"  # nothing in the query string
    assert PASSWORD not in str(request.url)
    assert form(request) == {
        "klantuser": "klant1",
        "klantpwd": PASSWORD,
        "naar": "32478123456",
        "bericht": "this is a test",
        "afzender": "SHOP",
        "delivery": "ja",
        "referentie": "m1",
    }
    assert result.status is Status.SENT
    assert result.provider_message_id == "1234567"
    assert PASSWORD not in json.dumps(result.raw)


def test_password_sha1_sends_the_hex_digest_and_test_mode_sets_test() -> None:
    seen: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(form(request))
        return httpx.Response(200, text="OK")

    [result] = adapter(handler, password_sha1=True, test_mode=True).send([msg()])
    assert seen["klantpwd"] == hashlib.sha1(PASSWORD.encode()).hexdigest()
    assert seen["test"] == "ja"
    assert result.status is Status.SENT
    assert result.provider_message_id is None


def test_same_text_goes_in_one_request_with_a_comma_list_and_no_reference() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(form(request))
        return httpx.Response(200, text="OK 11\nOK 12\nOK 13")

    batch = [msg("a", "32478000001"), msg("b", "31600000002"), msg("c", "31600000003")]
    results = adapter(handler).send(batch)
    assert len(seen) == 1
    assert seen[0]["naar"] == "32478000001,31600000002,31600000003"
    assert "referentie" not in seen[0]
    assert [r.provider_message_id for r in results] == ["11", "12", "13"]
    assert [r.ref for r in results] == ["a", "b", "c"]


@pytest.mark.parametrize("text", ["OK 11,12,13", "OK 11 12 13", "ok: 11, 12, 13"])
def test_several_ids_on_one_line(text: str) -> None:
    batch = [msg("a", "32478000001"), msg("b", "31600000002"), msg("c", "31600000003")]
    results = adapter(answer(text)).send(batch)
    assert [r.provider_message_id for r in results] == ["11", "12", "13"]


def test_one_id_for_several_numbers_goes_to_all() -> None:
    results = adapter(answer("OK 777")).send([msg("a", "3247800001"), msg("b", "3160000002")])
    assert [r.provider_message_id for r in results] == ["777", "777"]
    assert all(r.status is Status.SENT for r in results)


def test_unpairable_id_count_accepts_without_ids() -> None:
    batch = [msg("a", "32478000001"), msg("b", "31600000002"), msg("c", "31600000003")]
    results = adapter(answer("OK 11 12")).send(batch)
    assert all(r.status is Status.SENT and r.provider_message_id is None for r in results)
    assert results[0].raw["ids"] == ["11", "12"]


def test_one_line_per_number_with_a_refused_number() -> None:
    batch = [msg("a", "32478000001"), msg("b", "3160000000"), msg("c", "31600000003")]
    results = adapter(answer("OK 11\nERROR 106\nOK 13")).send(batch)
    assert [r.status for r in results] == [Status.SENT, Status.REJECTED, Status.SENT]
    assert results[1].error.startswith("sms1601 error 106: ")
    assert results[2].provider_message_id == "13"


def test_different_texts_and_senders_are_split_and_order_kept() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        data = form(request)
        seen.append(data)
        return httpx.Response(200, text=f"OK {len(seen)}")

    batch = [msg("a", text="one"), msg("b", text="two"), msg("c", text="one", sender="OTHER")]
    results = adapter(handler).send(batch)
    assert len(seen) == 3
    assert [(s["bericht"], s["afzender"]) for s in seen] == [
        ("one", "SHOP"),
        ("two", "SHOP"),
        ("one", "OTHER"),
    ]
    assert [r.provider_message_id for r in results] == ["1", "2", "3"]


def test_batches_over_the_limit_are_chunked() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        data = form(request)
        seen.append(data)
        return httpx.Response(200, text="OK 5")

    limit = limits_for("sms1601").max_batch
    batch = [msg(f"r{i}", f"3160{i:07d}") for i in range(limit + 3)]
    results = adapter(handler).send(batch)
    assert [len(s["naar"].split(",")) for s in seen] == [limit, 3]
    assert len(results) == limit + 3


def test_long_text_sets_type_long_and_too_long_raises_before_any_request() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(form(request))
        return httpx.Response(200, text="OK 1")

    adapter(handler).send([msg(text="x" * 161)])
    assert seen[0]["type"] == "long"
    adapter(handler).send([msg(text="x" * 160)])
    assert "type" not in seen[1]
    with pytest.raises(ValueError):
        adapter(handler).send([msg("ok"), msg("long", text="x" * 460)])
    assert len(seen) == 2


def test_reference_is_cut_to_75_characters() -> None:
    seen: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(form(request))
        return httpx.Response(200, text="OK 1")

    adapter(handler).send([msg("r" * 90)])
    assert seen["referentie"] == "r" * EXAMPLES["max_reference"]


def test_scheduled_send_uses_amsterdam_time_and_returns_the_outbox_id() -> None:
    seen: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(form(request))
        return httpx.Response(200, text="OK 555")

    when = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=2)
    [result] = adapter(handler).send([msg(send_at=when)])
    assert seen["datum"] == to_gateway_datum(when)
    assert seen["outboxid"] == "ja" and seen["emailen"] == "nee"
    assert result.provider_message_id == "555"
    assert result.raw["outbox_id"] == "555"


def test_gateway_datum_converts_utc_to_amsterdam() -> None:
    # Winter: UTC+1; summer: UTC+2; the document's own example date.
    assert to_gateway_datum(datetime(2015, 1, 26, 11, 15, tzinfo=UTC)) == "201501261215"
    assert to_gateway_datum(datetime(2015, 7, 26, 10, 15)) == "201507261215"
    assert to_gateway_datum(datetime(2015, 10, 26, 11, 15, 30, tzinfo=UTC)) == "201510261216"


def test_due_send_at_is_sent_now_without_datum() -> None:
    seen: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(form(request))
        return httpx.Response(200, text="OK 9")

    past = datetime.now(UTC) - timedelta(minutes=5)
    [result] = adapter(handler).send([msg(send_at=past)])
    assert "datum" not in seen
    assert "outbox_id" not in result.raw


# -- errors ------------------------------------------------------------------
def test_every_documented_code_is_mapped() -> None:
    documented = {int(k) for k in DOC_ERRORS if not k.startswith("_")}
    assert set(SMS1601_ERRORS) == documented
    assert {c for c, (_, kind) in SMS1601_ERRORS.items() if kind == RETRYABLE} == {120, 150}
    assert {c for c, (_, kind) in SMS1601_ERRORS.items() if kind == MESSAGE} == {
        102,
        103,
        105,
        106,
        107,
        112,
        114,
        118,
        119,
        121,
    }
    assert {c for c, (_, kind) in SMS1601_ERRORS.items() if kind == ACCOUNT} == {
        100,
        101,
        104,
        108,
        109,
        110,
        111,
        113,
        115,
        116,
        117,
        125,
        126,
    }


@pytest.mark.parametrize("code", [102, 103, 105, 106, 107, 112, 114, 118, 119, 121])
def test_message_errors_reject_the_request_messages(code: int) -> None:
    results = adapter(answer(f"ERROR {code}")).send([msg("a"), msg("b", "31600000002")])
    assert [r.status for r in results] == [Status.REJECTED, Status.REJECTED]
    assert results[0].error == f"sms1601 error {code}: {SMS1601_ERRORS[code][0]}"


@pytest.mark.parametrize(
    "code", [100, 101, 104, 108, 109, 110, 111, 113, 115, 116, 117, 125, 126, 122]
)
def test_account_errors_are_permanent(code: int) -> None:
    with pytest.raises(PermanentProviderError) as info:
        adapter(answer(f"ERROR {code}")).send([msg()])
    assert str(info.value).startswith(f"sms1601 error {code}: ")
    assert info.value.code == str(code)


@pytest.mark.parametrize("code", [120, 150])
def test_gateway_trouble_is_retryable(code: int) -> None:
    with pytest.raises(RetryableProviderError) as info:
        adapter(answer(f"ERROR {code}")).send([msg()])
    assert info.value.code == str(code)


@pytest.mark.parametrize(
    "text",
    ["ERROR 104", "ERROR104", "Error: 104", "FOUT 104", "ERROR 104 wrong login", "error 104\n"],
)
def test_error_spellings(text: str) -> None:
    with pytest.raises(PermanentProviderError) as info:
        adapter(answer(text)).send([msg()])
    assert "sms1601 error 104: no valid username and password combination" in str(info.value)
    assert PASSWORD not in str(info.value)


def test_error_text_echoing_the_password_is_scrubbed() -> None:
    with pytest.raises(PermanentProviderError) as info:
        adapter(answer(f"ERROR 104 bad klantpwd={PASSWORD}")).send([msg()])
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in json.dumps(info.value.raw)
    [result] = adapter(answer(f"ERROR 199 bad klantpwd={PASSWORD}")).send([msg()])
    assert result.status is Status.REJECTED
    assert PASSWORD not in (result.error or "") and PASSWORD not in json.dumps(result.raw)


@pytest.mark.parametrize("code", [500, 502, 503])
def test_5xx_is_retryable(code: int) -> None:
    with pytest.raises(RetryableProviderError):
        adapter(lambda r: httpx.Response(code, text="<html>down</html>")).send([msg()])


def test_html_or_empty_answer_is_retryable() -> None:
    for text in ("<html>oops</html>", ""):
        with pytest.raises(RetryableProviderError):
            adapter(answer(text)).send([msg()])


def test_timeout_is_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("slow", request=request)

    with pytest.raises(RetryableProviderError):
        adapter(handler).send([msg()])


def test_403_is_permanent() -> None:
    with pytest.raises(PermanentProviderError):
        adapter(lambda r: httpx.Response(403, text="Forbidden")).send([msg()])


# -- status --------------------------------------------------------------------
def test_status_with_date_from_the_document() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text=EXAMPLES["status_answer_with_date"])

    [report] = adapter(handler).fetch_status(["1234567"])
    assert seen[0].url.path == "/module/gatewayrapport.php"
    assert dict(seen[0].url.params) == {"smsid": "1234567", "datum": "ja"}
    assert PASSWORD not in str(seen[0].url)
    assert report.status is Status.DELIVERED
    assert report.provider_message_id == "1234567"
    # 01/02/2012 10:23:10 in Amsterdam (winter, UTC+1) is 09:23:10 UTC.
    assert report.occurred_at == datetime(2012, 2, 1, 9, 23, 10)


@pytest.mark.parametrize(
    ("text", "status", "raw"),
    [
        ("DELIVERED", Status.DELIVERED, "DELIVERED"),
        ("NOT DELIVERED 01/07/2012 10:23:10", Status.UNDELIVERED, "NOT DELIVERED"),
        ("not delivered", Status.UNDELIVERED, "NOT DELIVERED"),
        ("BUFFERED", Status.SENT, "BUFFERED"),
        ("SUBMITTED 01/02/2012 10:23:10", Status.SENT, "SUBMITTED"),
        ("REJECTED", Status.REJECTED, "REJECTED"),
        ("NONE", Status.SENT, "NONE"),
        ("SOMETHING NEW", None, "SOMETHING"),
    ],
)
def test_status_codes(text: str, status: Status | None, raw: str) -> None:
    [report] = adapter(answer(text)).fetch_status(["1"])
    assert report.status is status
    assert report.raw_status == raw


def test_not_delivered_date_in_summer() -> None:
    [report] = adapter(answer("NOT DELIVERED 01/07/2012 10:23:10")).fetch_status(["1"])
    assert report.occurred_at == datetime(2012, 7, 1, 8, 23, 10)


def test_status_error_and_html() -> None:
    with pytest.raises(PermanentProviderError):
        adapter(answer("ERROR 104")).fetch_status(["1"])
    with pytest.raises(RetryableProviderError):
        adapter(answer("<html>down</html>")).fetch_status(["1"])


# -- outbox, balance, report -------------------------------------------------
def test_cancel_and_clear_outbox() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        data = form(request)
        seen.append(data)
        return httpx.Response(200, text="OK" if data.get("id") == "555" else "ERROR 122")

    a = adapter(handler)
    assert a.cancel_scheduled("555") is True
    assert a.cancel_scheduled("556") is False
    assert a.clear_outbox() is False
    assert seen[0]["action"] == "verwijderbericht" and seen[0]["id"] == "555"
    assert seen[2]["action"] == "verwijderoutbox"
    with pytest.raises(PermanentProviderError):
        adapter(answer("ERROR 104")).clear_outbox()


def test_balance_from_the_document() -> None:
    seen: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(form(request))
        return httpx.Response(200, text=EXAMPLES["credits_answer"])

    balance = adapter(handler).fetch_balance()
    assert seen["action"] == "credits"
    assert balance.amount == 476.0
    assert balance.unit == "credits"
    with pytest.raises(PermanentProviderError):
        adapter(answer("ERROR 104")).fetch_balance()
    with pytest.raises(RetryableProviderError):
        adapter(answer("<html></html>")).fetch_balance()


def test_report_lines_both_shapes_and_junk() -> None:
    seen: dict = {}
    text = "\n".join(
        [
            "1001;DELIVERED;01/02/2012 10:23:10;ref-1",
            "1002;NOT DELIVERED;01/02/2012 10:24:00;",
            "1003 BUFFERED",
            "1004 NOT DELIVERED 01/02/2012 10:25:00 ref-4",
            "this is not a report line",
            "1005;WHATEVER",
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(form(request))
        return httpx.Response(200, text=text)

    reports = adapter(handler).fetch_report(50)
    assert seen["action"] == "rapport" and seen["aantal"] == "50"
    assert [(r.provider_message_id, r.status) for r in reports] == [
        ("1001", Status.DELIVERED),
        ("1002", Status.UNDELIVERED),
        ("1003", Status.SENT),
        ("1004", Status.UNDELIVERED),
    ]
    assert reports[0].ref == "ref-1" and reports[1].ref is None
    assert reports[0].occurred_at == datetime(2012, 2, 1, 9, 23, 10)
    assert reports[3].ref == "ref-4"
    with pytest.raises(PermanentProviderError):
        adapter(answer("ERROR 124")).fetch_report()


# -- callback ------------------------------------------------------------------
def test_callback_parsing() -> None:
    a = adapter(answer(""))
    [report] = a.parse_callback(
        {
            "smsid": "1234567",
            "datum": "20120201102310",
            "status": "NOT DELIVERED",
            "referentie": "m1",
        }
    )
    assert report.status is Status.UNDELIVERED
    assert report.occurred_at == datetime(2012, 2, 1, 9, 23, 10)
    assert report.ref == "m1"
    [report] = a.parse_callback({"SMSID": "7", "STATUS": "delivered", "referentie": ""})
    assert report.status is Status.DELIVERED and report.ref is None and report.occurred_at is None
    with pytest.raises(PermanentProviderError):
        a.parse_callback({"status": "DELIVERED"})
    with pytest.raises(PermanentProviderError):
        a.parse_callback({"smsid": "1"})


def test_date_parsing_variants() -> None:
    assert parse_sms1601_date("01/02/2012 10:23:10") == datetime(2012, 2, 1, 9, 23, 10)
    assert parse_sms1601_date("20120201102310") == datetime(2012, 2, 1, 9, 23, 10)
    assert parse_sms1601_date("") is None
    assert parse_sms1601_date(None) is None
    assert parse_sms1601_date("31/02/2012 10:00:00") is None
    assert parse_sms1601_date("soon") is None


def test_from_settings() -> None:
    settings = Sms1601Settings(
        username="klant1", password=PASSWORD, password_sha1=True, test_mode=True, sender="SHOP"
    )
    seen: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen.update(form(request))
        return httpx.Response(200, text="OK 1")

    client = httpx.Client(transport=httpx.MockTransport(handler))
    a = Sms1601Adapter.from_settings(settings, client=client)
    a.send([msg()])
    assert seen["url"] == f"{BASE}/gateway.php"
    assert seen["klantpwd"] == hashlib.sha1(PASSWORD.encode()).hexdigest()
    assert seen["test"] == "ja" and seen["afzender"] == "SHOP"
