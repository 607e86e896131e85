"""The real 1601SMS adapter over real HTTP against the 1601SMS simulator."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

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
from worker.gateways.sms1601.adapter import Sms1601Adapter, to_gateway_datum
from worker.gateways.sms1601.simulator import Sms1601Sim

CREDS = sandbox_credentials("sms1601")
DELAY = 0.3


@pytest.fixture(scope="module")
def running() -> Iterator[RunningSandbox]:
    server = start_in_thread(delivery_seconds=DELAY)
    yield server
    server.stop()


@pytest.fixture
def sim(running: RunningSandbox) -> Sms1601Sim:
    sim = running.sandbox.sims["sms1601"]
    assert isinstance(sim, Sms1601Sim)
    sim.reset()
    return sim


@pytest.fixture
def urls() -> list[str]:
    return []


def make(running: RunningSandbox, urls: list[str] | None = None, **kwargs) -> Sms1601Adapter:
    """An adapter on the sandbox; `urls` collects every URL it requests."""
    hooks = {"request": [lambda request: urls.append(str(request.url))]} if urls is not None else {}
    client = httpx.Client(timeout=5.0, event_hooks=hooks)
    options = {"username": CREDS["username"], "password": CREDS["password"], **kwargs}
    return Sms1601Adapter(base_url=running.base_url("sms1601"), client=client, **options)


def msg(ref: str, to: str, text: str = "Hallo vanuit smsq", **kw) -> OutgoingMessage:
    return OutgoingMessage(ref=ref, to=to, text=text, **kw)


def test_send_pending_then_final_per_outcome(
    running: RunningSandbox, sim: Sms1601Sim, urls: list[str]
) -> None:
    adapter = make(running, urls)
    batch = [msg("d", "31612345671"), msg("u", "31612345679"), msg("e", "31612345678")]
    results = adapter.send(batch)
    assert all(r.status is Status.SENT for r in results)
    ids = [r.provider_message_id for r in results]
    assert all(ids) and len(set(ids)) == 3
    assert sim.request_count("/gateway.php") == 1
    assert sim.requests[-1].recipients == 3
    assert sim.balance == 100000 - 3

    pending = adapter.fetch_status(ids)
    assert [r.status for r in pending] == [Status.SENT] * 3
    assert {r.raw_status for r in pending} <= {"SUBMITTED", "BUFFERED"}

    time.sleep(DELAY + 0.2)
    final = adapter.fetch_status(ids)
    assert [r.status for r in final] == [Status.DELIVERED, Status.UNDELIVERED, Status.UNDELIVERED]
    assert final[1].raw_status == "NOT DELIVERED"
    assert all(r.occurred_at is not None for r in final)
    assert abs((final[0].occurred_at - datetime.now(UTC).replace(tzinfo=None)).total_seconds()) < 5
    assert not any(CREDS["password"] in url for url in urls)


def test_rejected_number_in_a_mixed_batch(running: RunningSandbox, sim: Sms1601Sim) -> None:
    results = make(running).send([msg("ok", "31612345671"), msg("bad", "31612345670")])
    assert [r.status for r in results] == [Status.SENT, Status.REJECTED]
    assert results[1].error.startswith("sms1601 error 106")
    assert len(sim.messages) == 1


def test_all_numbers_invalid_rejects_the_request(running: RunningSandbox, sim: Sms1601Sim) -> None:
    results = make(running).send([msg("a", "31612345670"), msg("b", "12ab")])
    assert [r.status for r in results] == [Status.REJECTED, Status.REJECTED]
    assert sim.messages == {}


def test_unknown_id_reads_none(running: RunningSandbox, sim: Sms1601Sim) -> None:
    [report] = make(running).fetch_status(["424242"])
    assert report.raw_status == "NONE"
    assert report.status is Status.SENT


def test_bad_credentials_are_permanent(running: RunningSandbox, sim: Sms1601Sim) -> None:
    adapter = make(running, password="wrong-password")
    with pytest.raises(PermanentProviderError) as info:
        adapter.send([msg("a", "31612345671")])
    assert info.value.code == "104"
    assert "wrong-password" not in str(info.value)
    with pytest.raises(PermanentProviderError):
        adapter.fetch_balance()


def test_sha1_password_is_accepted(running: RunningSandbox, sim: Sms1601Sim) -> None:
    [result] = make(running, password_sha1=True).send([msg("a", "31612345671")])
    assert result.status is Status.SENT


def test_fault_is_retryable_then_success(running: RunningSandbox, sim: Sms1601Sim) -> None:
    adapter = make(running)
    sim.add_fault(Fault(status=503))
    with pytest.raises(RetryableProviderError):
        adapter.send([msg("a", "31612345671")])
    [result] = adapter.send([msg("a", "31612345671")])
    assert result.status is Status.SENT


def test_maintenance_is_retryable(running: RunningSandbox, sim: Sms1601Sim) -> None:
    sim.maintenance = True
    with pytest.raises(RetryableProviderError) as info:
        make(running).send([msg("a", "31612345671")])
    assert info.value.code == "150"


def test_balance_and_charging_per_part(running: RunningSandbox, sim: Sms1601Sim) -> None:
    sim.balance = 476
    adapter = make(running)
    assert adapter.fetch_balance().amount == 476.0
    [result] = adapter.send([msg("long", "31612345671", text="x" * 200)])
    assert result.status is Status.SENT
    assert sim.messages[result.provider_message_id].extra["long"] is True
    assert adapter.fetch_balance().amount == 474.0


def test_no_credit_and_inactive_are_permanent(running: RunningSandbox, sim: Sms1601Sim) -> None:
    sim.balance = 0
    with pytest.raises(PermanentProviderError) as info:
        make(running).send([msg("a", "31612345671")])
    assert info.value.code == "108"
    sim.balance = 10
    sim.active = False
    with pytest.raises(PermanentProviderError) as info:
        make(running).send([msg("a", "31612345671")])
    assert info.value.code == "115"


def test_sender_too_long_is_permanent(running: RunningSandbox, sim: Sms1601Sim) -> None:
    with pytest.raises(PermanentProviderError) as info:
        make(running, sender="ABCDEFGHIJKL").send([msg("a", "31612345671")])
    assert info.value.code == "111"


def test_test_mode_checks_but_stores_and_charges_nothing(
    running: RunningSandbox, sim: Sms1601Sim
) -> None:
    [result] = make(running, test_mode=True).send([msg("a", "31612345671")])
    assert result.status is Status.SENT
    assert sim.messages == {}
    assert sim.balance == 100000
    with pytest.raises(PermanentProviderError):
        make(running, test_mode=True, password="nope-nope").send([msg("a", "31612345671")])


def test_schedule_cancel_and_clear_outbox(running: RunningSandbox, sim: Sms1601Sim) -> None:
    adapter = make(running)
    when = datetime.now(UTC) + timedelta(days=1)
    results = adapter.send(
        [msg("a", "31612345671", send_at=when), msg("b", "31612345672", send_at=when)]
    )
    outbox_id = results[0].provider_message_id
    assert outbox_id and results[0].raw["outbox_id"] == outbox_id
    assert results[1].provider_message_id == outbox_id  # one outbox id for the request
    assert sim.outbox[outbox_id]["datum"] == to_gateway_datum(when)
    assert sim.outbox[outbox_id]["email"] is False
    assert sim.messages == {}
    assert adapter.cancel_scheduled(outbox_id) is True
    assert adapter.cancel_scheduled(outbox_id) is False
    assert adapter.clear_outbox() is False
    adapter.send([msg("c", "31612345673", send_at=when)])
    assert adapter.clear_outbox() is True
    assert sim.outbox == {}


def test_report_of_the_last_messages(running: RunningSandbox, sim: Sms1601Sim) -> None:
    adapter = make(running)
    adapter.send([msg("first", "31612345671")])
    adapter.send([msg("second", "31612345679")])
    time.sleep(DELAY + 0.2)
    reports = adapter.fetch_report(1)
    assert [(r.ref, r.status) for r in reports] == [("second", Status.UNDELIVERED)]
    assert len(adapter.fetch_report(100)) == 2


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, str]] = []

    def do_GET(self) -> None:
        self.received.append(dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


def test_push_reaches_the_account_url_and_parses(running: RunningSandbox, sim: Sms1601Sim) -> None:
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.received = []
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        sim.callback_url = f"http://127.0.0.1:{receiver.server_address[1]}/dlr"
        adapter = make(running)
        [result] = adapter.send([msg("pushed", "31612345679")])
        deadline = time.monotonic() + 5
        while not _Receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
        [params] = _Receiver.received
        [report] = adapter.parse_callback(params)
        assert report.provider_message_id == result.provider_message_id
        assert report.status is Status.UNDELIVERED
        assert report.ref == "pushed"
        assert report.occurred_at is not None
        assert (
            abs((report.occurred_at - datetime.now(UTC).replace(tzinfo=None)).total_seconds()) < 5
        )
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_sim_answers_documented_errors_over_get(running: RunningSandbox, sim: Sms1601Sim) -> None:
    """The simulator also takes the document's GET query form."""
    url = f"{running.base_url('sms1601')}/gateway.php"
    auth = {"klantuser": CREDS["username"], "klantpwd": CREDS["password"]}
    base = {**auth, "naar": "31612345671", "bericht": "hi", "afzender": "SHOP"}
    cases = [
        ({"klantpwd": CREDS["password"]}, "ERROR 100"),
        ({"klantuser": CREDS["username"]}, "ERROR 101"),
        ({**base, "bericht": ""}, "ERROR 102"),
        ({**base, "naar": ""}, "ERROR 103"),
        ({**base, "afzender": ""}, "ERROR 109"),
        ({**base, "afzender": "31612345"}, "ERROR 110"),
        ({**base, "afzender": "SH@P"}, "ERROR 113"),
        ({**base, "bericht": "x" * 161}, "ERROR 105"),
        ({**base, "bericht": "x" * 460, "type": "long"}, "ERROR 118"),
        ({**base, "naar": "99912345671"}, "ERROR 107"),
        ({**base, "datum": "201001011200"}, "ERROR 121"),
        ({**base, "datum": "tomorrow"}, "ERROR 121"),
        ({**base, "naar": "groep", "groep": "nobody"}, "ERROR 125"),
        ({**auth, "action": "verwijderbericht", "id": "1"}, "ERROR 122"),
        ({**auth, "action": "rapport"}, "ERROR 123"),
        ({**auth, "action": "rapport", "aantal": "many"}, "ERROR 124"),
        (base, "OK"),
    ]
    for params, expected in cases:
        assert httpx.get(url, params=params).text == expected, params
