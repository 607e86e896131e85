"""Keccel's seed SDK, `pykeccelsms` 0.2, against `smsq sandbox` over loopback HTTP.

The sandbox is the real `smsq sandbox` command, started as a subprocess on a free
port with a short `--delivery-seconds` and stopped with SIGINT (Ctrl-C) at the end
of the module; each test resets it through `/_control/reset`. The SDK is used as
its users would, with only its hard-coded `base_url` pointed at the sandbox.
What it puts on the wire is read from the `requests` responses it got (a spy,
the requests still go out): its GETs carry their parameters as a JSON body and
no query string, which smsq's simulator once answered "Invalid token".

The SDK raises no exception for Keccel's errors: it returns Keccel's JSON (HTTP
200 with `status: Rejected` or `Error` and a description) and prints each URL
and HTTP status. Its send method is spelt `send_messsage` (three s) in 0.2.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import keccelsms
import pytest
import requests

from worker.gateways.keccel.adapter import KeccelAdapter
from worker.gateways.sandbox.base import sandbox_credentials
from worker.gateways.sandbox.server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOKEN = sandbox_credentials("keccel")["token"]
DELIVERY = 1.0  # seconds a message stays pending in the sandbox
SENT = {"status": "SENT", "description": "Message submitted to the network"}


def wait_until(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float) -> Any:
    """`read()` until `done` says yes; AssertionError with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout}s")
        time.sleep(0.05)


def _account(process: subprocess.Popen[bytes], url: str, log: Path) -> dict[str, Any] | None:
    """The sandbox's Keccel account once it answers; None while it starts."""
    if process.poll() is not None:
        raise AssertionError(f"smsq sandbox exited {process.returncode}: {log.read_text()}")
    try:
        return httpx.get(f"{url}/_control/keccel/account", timeout=1).json()
    except httpx.HTTPError:
        return None


@pytest.fixture(scope="module")
def sandbox_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`smsq sandbox` in a subprocess, until the module is done."""
    workdir = tmp_path_factory.mktemp("keccel-sdk")
    port = free_port()
    command = [str(Path(sys.executable).parent / "smsq"), "sandbox", "--port", str(port)]
    log_path = workdir / "sandbox.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*command, "--delivery-seconds", str(DELIVERY)],
            cwd=workdir,  # no stray .env
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        account = wait_until(lambda: _account(process, url, log_path), bool, 30)
        assert account["delivery_seconds"] == DELIVERY, account
        yield url
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C, as a user stops it
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def sandbox(sandbox_url: str) -> str:
    """The sandbox's URL, its simulators reset."""
    httpx.post(f"{sandbox_url}/_control/reset", timeout=5).raise_for_status()
    return sandbox_url


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> list[requests.PreparedRequest]:
    """Every request the SDK sent, as `requests` prepared it."""
    sent: list[requests.PreparedRequest] = []

    def spy(call: Callable[..., requests.Response]) -> Callable[..., requests.Response]:
        def wrapper(*args: Any, **kwargs: Any) -> requests.Response:
            response = call(*args, **kwargs)
            sent.append(response.request)
            return response

        return wrapper

    fake = SimpleNamespace(get=spy(requests.get), post=spy(requests.post))
    monkeypatch.setattr(keccelsms, "requests", fake)
    return sent


def sdk(url: str, token: str = TOKEN, sender: str = "GUEST") -> keccelsms.APIClient:
    client = keccelsms.APIClient(token=token, sender_id=sender)
    client.base_url = f"{url}/keccel"  # the SDK has no other way to set it
    return client


def book(url: str) -> list[dict[str, Any]]:
    """The sandbox's messages, as its control API lists them."""
    return httpx.get(f"{url}/_control/keccel/messages", timeout=5).json()


def set_account(url: str, **fields: Any) -> None:
    httpx.post(f"{url}/_control/keccel/account", json=fields, timeout=5).raise_for_status()


def test_send_is_taken_and_booked(sandbox: str) -> None:
    answer = sdk(sandbox, sender="SHOP").send_messsage("243851234567", "Hello from the SDK")
    assert answer == {**SENT, "messageID": answer["messageID"]}
    [kept] = book(sandbox)
    assert kept["id"] == answer["messageID"]
    assert (kept["to"], kept["text"], kept["sender"]) == (
        "243851234567",
        "Hello from the SDK",
        "SHOP",
    )


@pytest.mark.parametrize(
    ("number", "final"),
    [("243851234567", "DELIVERED"), ("243851234569", "FAILED"), ("243851234568", "FAILED")],
)
def test_delivery_report_is_pending_then_final(sandbox: str, number: str, final: str) -> None:
    client = sdk(sandbox)
    sent_at = time.monotonic()
    message_id = client.send_messsage(number, "report me")["messageID"]
    assert client.get_delivery_report(message_id) == {"messageid": message_id, "status": "SENT"}
    report = wait_until(
        lambda: client.get_delivery_report(message_id),
        lambda r: r.get("status") != "SENT",
        timeout=DELIVERY + 15,
    )
    assert report == {"messageid": message_id, "status": final}
    assert time.monotonic() - sent_at >= DELIVERY  # pending for the sandbox's delay


def test_balance_is_the_accounts_and_a_send_costs_a_credit(sandbox: str) -> None:
    expires = (datetime.now(UTC) + timedelta(days=400)).replace(microsecond=0, tzinfo=None)
    set_account(sandbox, balance=645, expires_at=expires.isoformat())
    client = sdk(sandbox)
    expiration = expires.strftime("%d-%b-%Y %H:%M:%S")  # the document's `31-Dec-2021 06:46:17`
    expected = {"balance": "645", "expiration": expiration, "status": "Active"}
    assert client.get_balance() == expected
    assert client.send_messsage("243851234567", "one credit")["status"] == "SENT"
    assert client.get_balance() == {**expected, "balance": "644"}
    set_account(sandbox, active=False)
    assert client.get_balance() == {**expected, "balance": "644", "status": "inactive"}
    assert client.send_messsage("243851234567", "refused") == {
        "status": "Rejected",
        "description": "Account inactive",
    }


def test_bad_token_is_answered_as_keccels_document_says(
    sandbox: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = sdk(sandbox).send_messsage("243851234567", "mine")["messageID"]
    capsys.readouterr()
    bad = sdk(sandbox, token="not-the-sandbox-token")
    assert bad.send_messsage("243851234567", "not mine") == {
        "status": "Rejected",
        "description": "Invalid token",
    }
    refused = {"status": "Error", "description": "Invalid token"}
    assert bad.get_delivery_report(message_id) == refused
    assert bad.get_balance() == refused
    assert capsys.readouterr().out.count("Response status: 200") == 3  # errors ride on HTTP 200
    assert [m["text"] for m in book(sandbox)] == ["mine"]
    assert sdk(sandbox).get_balance()["balance"] == "99999"  # the refused send cost nothing


def test_what_the_sdk_puts_on_the_wire(sandbox: str, wire: list[requests.PreparedRequest]) -> None:
    client = sdk(sandbox)
    message_id = client.send_messsage("243851234567", "wire")["messageID"]
    client.get_delivery_report(message_id)
    client.get_balance()
    urls = [urlsplit(r.url or "") for r in wire]
    assert [(r.method, url.path, url.query) for r, url in zip(wire, urls, strict=True)] == [
        ("POST", "/keccel/message.asp", ""),
        ("GET", "/keccel/delivery.asp", ""),
        ("GET", "/keccel/balance.asp", ""),
    ]
    assert [r.headers["Content-Type"] for r in wire] == ["application/json"] * 3
    bodies = [json.loads(r.body or b"") for r in wire]
    auth = {"token": TOKEN, "from": "GUEST"}
    assert bodies == [
        {**auth, "to": "243851234567", "message": "wire"},
        {**auth, "messageid": message_id},
        auth,
    ]


def test_the_sdk_and_smsqs_adapter_see_the_same_account(sandbox: str) -> None:
    client = sdk(sandbox)
    message_id = client.send_messsage("243851234569", "seen by both")["messageID"]
    with KeccelAdapter(token=TOKEN, sender="GUEST", base_url=f"{sandbox}/keccel") as adapter:
        assert adapter.fetch_balance().amount == float(client.get_balance()["balance"])
        [report] = wait_until(
            lambda: adapter.fetch_status([message_id]),
            lambda reports: reports[0].raw_status != "SENT",
            timeout=DELIVERY + 15,
        )
    assert report.raw_status == client.get_delivery_report(message_id)["status"] == "FAILED"
