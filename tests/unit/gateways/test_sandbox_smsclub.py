"""The real SMSClub adapter over real HTTP against the SMSClub simulator."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import httpx
import pytest

from producer.status import Status
from worker.gateways.base import (
    OutgoingMessage,
    PermanentProviderError,
    RetryableProviderError,
)
from worker.gateways.sandbox.base import Fault, sandbox_credentials
from worker.gateways.sandbox.server import RunningSandbox, start_in_thread
from worker.gateways.smsclub.adapter import DUPLICATE_NOTE, SmsClubAdapter
from worker.gateways.smsclub.simulator import SmsClubSim

DELIVERY = 0.3
TOKEN = sandbox_credentials("smsclub")["token"]
_texts = itertools.count(1)


@pytest.fixture(scope="module")
def running() -> Iterator[RunningSandbox]:
    sandbox = start_in_thread(delivery_seconds=DELIVERY)
    yield sandbox
    sandbox.stop()


@pytest.fixture
def sim(running: RunningSandbox) -> SmsClubSim:
    simulator = running.sandbox.sims["smsclub"]
    assert isinstance(simulator, SmsClubSim)
    simulator.reset()
    return simulator


@pytest.fixture
def client(running: RunningSandbox, sim: SmsClubSim) -> Iterator[SmsClubAdapter]:
    with SmsClubAdapter(
        token=TOKEN, sender="SMSQ", base_url=running.base_url("smsclub"), timeout=5
    ) as adapter:
        yield adapter


def msg(to: str, ref: str = "m", text: str | None = None) -> OutgoingMessage:
    """A message with a fresh text, so that no test trips the 2-minute duplicate rule."""
    return OutgoingMessage(ref=ref, to=to, text=text or f"hello {next(_texts)}")


def wait_final(client: SmsClubAdapter, ids: list[str]) -> dict[str, Status | None]:
    time.sleep(DELIVERY + 0.1)
    return {r.provider_message_id: r.status for r in client.fetch_status(ids)}


def test_send_pending_then_final_per_outcome(client: SmsClubAdapter, sim: SmsClubSim) -> None:
    text = "outcome test"
    numbers = {"d": "380501234561", "u": "380501234569", "e": "380501234568"}
    results = client.send([msg(to, ref, text) for ref, to in numbers.items()])
    assert [r.status for r in results] == [Status.SENT] * 3
    ids = [r.provider_message_id for r in results]
    assert all(ids) and len(set(ids)) == 3
    pending = client.fetch_status(ids)
    assert [(r.raw_status, r.status) for r in pending] == [("ENROUTE", Status.SENT)] * 3
    final = wait_final(client, ids)
    assert final == {
        ids[0]: Status.DELIVERED,
        ids[1]: Status.UNDELIVERED,
        ids[2]: Status.EXPIRED,
    }
    assert sim.requests[0].recipients == 3
    assert sim.balance == 100000.0 - 3


def test_rejected_and_invalid_numbers_only_reject_that_message(
    client: SmsClubAdapter, sim: SmsClubSim
) -> None:
    text = "mixed batch"
    results = client.send(
        [
            msg("380501234561", "ok", text),
            msg("380501234560", "operator", text),
            msg("490501234561", "foreign", text),
            msg("38050123", "short", text),
        ]
    )
    assert [r.status for r in results] == [Status.SENT] + [Status.REJECTED] * 3
    assert "rejected by operator" in (results[1].error or "")
    assert "invalid number" in (results[2].error or "")
    assert "invalid number" in (results[3].error or "")
    assert sim.balance == 100000.0 - 1


def test_same_number_twice_gets_two_ids(client: SmsClubAdapter) -> None:
    text = "twice"
    first, second = client.send([msg("380501234561", "a", text), msg("380501234561", "b", text)])
    assert first.provider_message_id and second.provider_message_id
    assert int(first.provider_message_id) < int(second.provider_message_id)


def test_duplicate_within_two_minutes_is_reported_sent(
    client: SmsClubAdapter, sim: SmsClubSim
) -> None:
    batch = [msg("380501234561", "a", "same text"), msg("380501234562", "b", "same text")]
    first = client.send(batch)
    assert all(r.provider_message_id and not r.duplicate for r in first)
    again = client.send(list(reversed(batch)))
    assert [r.ref for r in again] == ["b", "a"]
    assert all(r.duplicate and r.status is Status.SENT for r in again)
    assert all(r.provider_message_id is None and r.error == DUPLICATE_NOTE for r in again)
    assert len(sim.messages) == 2
    sim.reset()
    assert client.send(batch)[0].duplicate is False


def test_more_than_100_numbers_are_split(client: SmsClubAdapter, sim: SmsClubSim) -> None:
    text = "big batch"
    batch = [msg(f"380500000{i:03d}", f"r{i}", text) for i in range(1, 131)]
    results = client.send(batch)
    assert sorted(r.recipients for r in sim.requests) == [30, 100]
    expected = [Status.REJECTED if m.to.endswith("0") else Status.SENT for m in batch]
    assert [r.status for r in results] == expected
    ids = [r.provider_message_id for r in results if r.provider_message_id]
    assert len(set(ids)) == len(ids) == 117
    reports = client.fetch_status(ids)
    assert len(reports) == 117
    assert sim.request_count("/sms/status") == 2


def test_unknown_ids_give_no_report(client: SmsClubAdapter) -> None:
    [result] = client.send([msg("380501234561")])
    reports = client.fetch_status(["999999999", result.provider_message_id or ""])
    assert [r.provider_message_id for r in reports] == [result.provider_message_id]


def test_bad_token_is_permanent(running: RunningSandbox, sim: SmsClubSim) -> None:
    with SmsClubAdapter(
        token="wrong-token", sender="SMSQ", base_url=running.base_url("smsclub")
    ) as bad:
        with pytest.raises(PermanentProviderError) as info:
            bad.send([msg("380501234561")])
        assert info.value.code == "401"
        assert "wrong-token" not in str(info.value)
        with pytest.raises(PermanentProviderError):
            bad.fetch_balance()
        with pytest.raises(PermanentProviderError):
            bad.fetch_status(["100001"])
    assert sim.messages == {}


def test_missing_bearer_header_is_401(running: RunningSandbox, sim: SmsClubSim) -> None:
    response = httpx.post(
        f"{running.base_url('smsclub')}/sms/balance", headers={"Authorization": TOKEN}
    )
    assert response.status_code == 401
    assert response.json() == {"error": "User authentication error"}


def test_unknown_sender_is_permanent_validation_error(
    running: RunningSandbox, sim: SmsClubSim
) -> None:
    with (
        SmsClubAdapter(token=TOKEN, sender="Nobody", base_url=running.base_url("smsclub")) as other,
        pytest.raises(PermanentProviderError) as info,
    ):
        other.send([msg("380501234561")])
    assert info.value.code == "400"
    assert "src_addr" in str(info.value)


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b"{not json", "malformed JSON"),
        (b'{"message": "x", "src_addr": "SMSQ"}', "phone"),
        (b'{"phone": [], "message": "x", "src_addr": "SMSQ"}', "phone"),
        (b'{"phone": ["380501234561"], "src_addr": "SMSQ"}', "message"),
    ],
)
def test_simulator_input_validation(
    running: RunningSandbox, sim: SmsClubSim, body: bytes, what: str
) -> None:
    response = httpx.post(
        f"{running.base_url('smsclub')}/sms/send",
        content=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith("Input validation error")
    assert what in error


def test_simulator_refuses_more_than_100_numbers(running: RunningSandbox, sim: SmsClubSim) -> None:
    phones = [f"380500000{i:03d}" for i in range(101)]
    response = httpx.post(
        f"{running.base_url('smsclub')}/sms/send",
        json={"phone": phones, "message": "x", "src_addr": "SMSQ"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 400
    assert sim.messages == {}


def test_insufficient_credit_is_permanent(client: SmsClubAdapter, sim: SmsClubSim) -> None:
    sim.balance = 1.0
    with pytest.raises(PermanentProviderError) as info:
        client.send([msg("380501234561", "a", "credit"), msg("380501234562", "b", "credit")])
    assert "insufficient" in str(info.value).lower()
    assert sim.messages == {}
    assert sim.balance == 1.0


def test_injected_503_is_retryable_then_success(client: SmsClubAdapter, sim: SmsClubSim) -> None:
    sim.add_fault(Fault(status=503))
    batch = [msg("380501234561", "a")]
    with pytest.raises(RetryableProviderError):
        client.send(batch)
    [result] = client.send(batch)
    assert result.status is Status.SENT
    assert result.duplicate is False
    assert result.provider_message_id


def test_injected_429_is_throttled(client: SmsClubAdapter, sim: SmsClubSim) -> None:
    sim.add_fault(Fault(status=429, body="Too many requests", headers={"Retry-After": "2"}))
    with pytest.raises(RetryableProviderError) as info:
        client.fetch_balance()
    assert info.value.throttled
    assert info.value.retry_after == 2.0


def test_balance_and_senders(client: SmsClubAdapter, sim: SmsClubSim) -> None:
    sim.balance = 8111.17
    balance = client.fetch_balance()
    assert balance.amount == 8111.17
    assert balance.unit == "UAH"
    assert balance.expires_at is None and balance.active is None
    client.send([msg("380501234561")])
    assert client.fetch_balance().amount == pytest.approx(8110.17)
    assert client.fetch_senders() == ["SMSQ", "VashZakaz", "SMSClub"]
    sim.senders.append("Extra")
    assert "Extra" in client.fetch_senders()
