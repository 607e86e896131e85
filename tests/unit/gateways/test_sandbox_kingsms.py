"""The real KING SMS PRO adapter over real HTTP against the KING SMS PRO simulator."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from producer.status import Status
from worker.gateways.base import (
    OutgoingMessage,
    PermanentProviderError,
    RetryableProviderError,
    StatusReport,
)
from worker.gateways.kingsms.adapter import KingSmsAdapter
from worker.gateways.kingsms.simulator import KingSmsSim
from worker.gateways.sandbox.base import Fault, sandbox_credentials
from worker.gateways.sandbox.server import RunningSandbox, start_in_thread

DELAY = 0.3
CREDS = sandbox_credentials("kingsms")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    running = start_in_thread(delivery_seconds=DELAY)
    yield running
    running.stop()


@pytest.fixture
def sim(sandbox: RunningSandbox) -> KingSmsSim:
    simulator = sandbox.sandbox.sims["kingsms"]
    assert isinstance(simulator, KingSmsSim)
    simulator.reset()
    simulator.delivery_seconds = DELAY
    return simulator


@pytest.fixture
def king(sandbox: RunningSandbox, sim: KingSmsSim) -> Iterator[KingSmsAdapter]:
    client = KingSmsAdapter(
        api_key=CREDS["api_key"], client_id=CREDS["client_id"], base_url=sandbox.base_url("kingsms")
    )
    yield client
    client.close()


def msg(to: str, ref: str = "m1", **kwargs: Any) -> OutgoingMessage:
    return OutgoingMessage(ref=ref, to=to, text="hello!", **kwargs)


def wait_final(king: KingSmsAdapter, message_id: str) -> StatusReport:
    deadline = time.monotonic() + 5
    while True:
        [report] = king.fetch_status([message_id])
        if report.status is not Status.SENT or time.monotonic() > deadline:
            return report
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("to", "final", "code"),
    [
        ("22890443671", Status.DELIVERED, "DLV"),
        ("22890443679", Status.UNDELIVERED, "ERD"),
        ("22890443678", Status.EXPIRED, "EXP"),
    ],
)
def test_send_then_pending_then_final(
    king: KingSmsAdapter, sim: KingSmsSim, to: str, final: Status, code: str
) -> None:
    [result] = king.send([msg(to)])
    assert result.status is Status.SENT
    assert result.provider_message_id
    assert result.raw["sms_count"] == 1
    assert result.raw["amount"] == 10
    assert result.raw["currency"] == "XOF"
    [pending] = king.fetch_status([result.provider_message_id])
    assert pending.status is Status.SENT
    assert pending.raw_status in ("ACT", "DLG")
    assert pending.to == to
    time.sleep(DELAY + 0.05)
    [report] = king.fetch_status([result.provider_message_id])
    assert report.status is final
    assert report.raw_status == code
    assert sim.request_count("/sms/send") == 1
    assert sim.requests[0].recipients == 1


def test_pending_moves_from_act_to_dlg(king: KingSmsAdapter, sim: KingSmsSim) -> None:
    sim.delivery_seconds = 1.0
    [result] = king.send([msg("22890443671")])
    [first] = king.fetch_status([result.provider_message_id])
    time.sleep(0.6)
    [second] = king.fetch_status([result.provider_message_id])
    assert (first.raw_status, second.raw_status) == ("ACT", "DLG")
    assert second.status is Status.SENT


def test_number_ending_in_0_is_rejected_with_inv(king: KingSmsAdapter, sim: KingSmsSim) -> None:
    [result] = king.send([msg("22890443670")])
    assert result.status is Status.REJECTED
    assert "INV" in (result.error or "")
    assert result.provider_message_id
    [report] = king.fetch_status([result.provider_message_id])
    assert report.status is Status.REJECTED
    assert sim.balance == 100000.0  # nothing charged


def test_long_and_unicode_texts_count_parts_and_charge(
    king: KingSmsAdapter, sim: KingSmsSim
) -> None:
    long = OutgoingMessage(ref="l", to="22890443671", text="a" * 161)
    unicode = OutgoingMessage(ref="u", to="22890443671", text="ж" * 71)
    too_long = OutgoingMessage(ref="t", to="22890443671", text="a" * 900)
    [r1] = king.send([long])
    [r2] = king.send([unicode])
    [r3] = king.send([too_long])
    assert (r1.raw["sms_count"], r1.raw["amount"]) == (2, 20)
    assert (r2.raw["sms_count"], r2.raw["amount"]) == (2, 20)
    assert r3.status is Status.REJECTED and "LEN" in (r3.error or "")
    assert sim.balance == 100000.0 - 40
    stored = sim.messages[r2.provider_message_id]
    assert stored.text == "ж" * 71


def test_flash_type_reaches_the_simulator(king: KingSmsAdapter, sim: KingSmsSim) -> None:
    [result] = king.send([msg("22890443671", flash=True, sender="SHOP")])
    stored = sim.messages[result.provider_message_id]
    assert stored.extra["type"] == "1"
    assert stored.sender == "SHOP"


def test_insufficient_balance_is_permanent(king: KingSmsAdapter, sim: KingSmsSim) -> None:
    sim.balance = 5
    with pytest.raises(PermanentProviderError) as info:
        king.send([msg("22890443671")])
    assert info.value.code == "NSF"
    assert sim.messages == {}


def test_bad_credentials_are_permanent(sandbox: RunningSandbox, sim: KingSmsSim) -> None:
    base = sandbox.base_url("kingsms")
    for key, client_id in (("wrong-key-123", CREDS["client_id"]), (CREDS["api_key"], "2")):
        with KingSmsAdapter(api_key=key, client_id=client_id, base_url=base) as bad:
            with pytest.raises(PermanentProviderError) as info:
                bad.send([msg("22890443671")])
            assert info.value.code == "401"
            assert key not in str(info.value)
            with pytest.raises(PermanentProviderError):
                bad.fetch_balance()
    assert sim.messages == {}


def test_disabled_account_is_permanent(king: KingSmsAdapter, sim: KingSmsSim) -> None:
    sim.active = False
    with pytest.raises(PermanentProviderError) as info:
        king.send([msg("22890443671")])
    assert info.value.code == "403"


def test_injected_503_is_retryable_then_success(king: KingSmsAdapter, sim: KingSmsSim) -> None:
    sim.add_fault(Fault(status=503))
    with pytest.raises(RetryableProviderError):
        king.send([msg("22890443671")])
    [result] = king.send([msg("22890443671")])
    assert result.status is Status.SENT
    assert len(sim.messages) == 1


def test_injected_429_carries_retry_after(king: KingSmsAdapter, sim: KingSmsSim) -> None:
    sim.add_fault(Fault(status=429, body="slow down", headers={"Retry-After": "3"}))
    with pytest.raises(RetryableProviderError) as info:
        king.fetch_balance()
    assert info.value.retry_after == 3.0


def test_timeout_is_retryable(sandbox: RunningSandbox, sim: KingSmsSim) -> None:
    sim.add_fault(Fault(delay=0.5, passthrough=True))
    with (
        KingSmsAdapter(
            api_key=CREDS["api_key"],
            client_id=CREDS["client_id"],
            base_url=sandbox.base_url("kingsms"),
            timeout=0.1,
        ) as slow,
        pytest.raises(RetryableProviderError),
    ):
        slow.fetch_balance()


def test_balance_drops_after_a_send(king: KingSmsAdapter, sim: KingSmsSim) -> None:
    before = king.fetch_balance()
    assert (before.amount, before.unit) == (100000.0, "XOF")
    king.send([msg("22890443671")])
    after = king.fetch_balance()
    assert after.amount == 100000.0 - 10
    assert CREDS["api_key"] not in str(after.raw)


def test_unknown_message_trace_is_permanent(king: KingSmsAdapter) -> None:
    with pytest.raises(PermanentProviderError, match="not found"):
        king.fetch_status(["999999"])


def test_reports_list_messages_of_the_days(king: KingSmsAdapter, sim: KingSmsSim) -> None:
    [ok] = king.send([msg("22890443671", ref="a")])
    [refused] = king.send([msg("22890443670", ref="b")])
    [kept] = king.send([msg("22890443679", ref="c")])
    sim.messages[kept.provider_message_id].created -= 3 * 86400  # sent three days ago
    today = datetime.now(UTC).date()
    reports = king.fetch_reports(today, today)
    assert {r.provider_message_id for r in reports} == {
        ok.provider_message_id,
        refused.provider_message_id,
    }
    by_id = {r.provider_message_id: r for r in reports}
    assert by_id[refused.provider_message_id].status is Status.REJECTED
    assert by_id[ok.provider_message_id].to == "22890443671"
    wider = king.fetch_reports(today - timedelta(days=3), today)
    assert len(wider) == 3
    assert king.fetch_reports(today, today, type=1) == []
    assert king.fetch_reports(date(2000, 1, 1), date(2000, 1, 2)) == []


def test_delivery_report_is_pushed_to_the_dlr_url(
    sandbox: RunningSandbox, king: KingSmsAdapter, sim: KingSmsSim
) -> None:
    received: list[dict[str, str]] = []

    async def dlr(request: Request) -> PlainTextResponse:
        received.append(dict(request.query_params))
        return PlainTextResponse("OK")

    # A receiver on the same server: mount it as an extra route of the running app.
    receiver = Route("/_test/kingsms-dlr", dlr, methods=["GET"])
    sandbox.sandbox.app.router.routes.append(receiver)
    try:
        url = f"{sandbox.url}/_test/kingsms-dlr"
        [result] = king.send([msg("22890443679", dlr_url=url)])
        [quiet] = king.send([msg("22890443671")])  # no dlr asked: no push
        assert received == []  # not before the message is final
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(DELAY)
    finally:
        sandbox.sandbox.app.router.routes.remove(receiver)
    assert received == [
        {"messageId": result.provider_message_id, "status": "ERD", "destination": "22890443679"}
    ]
    [report] = king.parse_callback(received[0])
    assert report.provider_message_id == result.provider_message_id
    assert report.status is Status.UNDELIVERED
    assert quiet.provider_message_id not in {r["messageId"] for r in received}


# -- the simulator's own protocol checks (raw HTTP, as the PHP sample would post) ----
def post(sandbox: RunningSandbox, path: str, headers: dict[str, str] | None = None, **kw: Any):
    auth = {"APIKEY": CREDS["api_key"], "CLIENTID": CREDS["client_id"]}
    return httpx.post(f"{sandbox.base_url('kingsms')}{path}", headers=headers or auth, **kw)


def test_multipart_body_like_curl_with_an_array(sandbox: RunningSandbox, sim: KingSmsSim) -> None:
    fields = {"from": "KING SMS", "to": "22890443679", "type": "0", "message": "é!", "dlr": "0"}
    response = post(sandbox, "/sms/send", files={k: (None, v) for k, v in fields.items()})
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()["result"]
    assert response.status_code == 200
    assert body["status"] == "ACT"
    assert body["Currency"] == "XOF"
    assert sim.messages[body["messageId"]].text == "é!"


def test_json_body_is_accepted(sandbox: RunningSandbox) -> None:
    payload = {"from": "KING SMS", "to": "22890443671", "message": "hi", "type": 0}
    response = post(sandbox, "/sms/send", json=payload)
    assert response.status_code == 200
    assert response.json()["result"]["status"] == "ACT"


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"to": "22890443671", "message": "hi"}, "from"),
        ({"from": "KING", "message": "hi"}, "to"),
        ({"from": "KING", "to": "22890443671"}, "message"),
        ({"from": "TWELVE CHARS", "to": "22890443671", "message": "hi"}, "11"),
        ({"from": "KING", "to": "22890443671", "message": "hi", "type": "7"}, "type"),
    ],
)
def test_bad_send_parameters_get_400(
    sandbox: RunningSandbox, sim: KingSmsSim, fields: dict[str, str], needle: str
) -> None:
    response = post(sandbox, "/sms/send", data=fields)
    assert response.status_code == 400
    assert response.json()["status"] == "error"
    assert needle in response.json()["message"]
    assert sim.messages == {}


def test_wrong_headers_get_401_json(sandbox: RunningSandbox) -> None:
    response = post(sandbox, "/account/details", headers={"APIKEY": "x", "CLIENTID": "1"})
    assert response.status_code == 401
    assert response.json() == {"status": "error", "message": "Invalid API key or client id"}


def test_account_details_hold_no_secret(sandbox: RunningSandbox) -> None:
    body = post(sandbox, "/account/details").json()
    assert body == {"balance": "100000.00", "currency": "XOF", "client_id": CREDS["client_id"]}
    assert CREDS["api_key"] not in str(body)


def test_reports_refuse_bad_dates(sandbox: RunningSandbox) -> None:
    bad = post(sandbox, "/sms/reports", data={"date_start": "2024-05-02", "date_end": "x"})
    assert bad.status_code == 400
    reversed_ = post(
        sandbox, "/sms/reports", data={"date_start": "2024-05-02", "date_end": "2024-05-01"}
    )
    assert reversed_.status_code == 400
