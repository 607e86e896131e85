"""`callback_url` cannot be aimed inside: refused at `send_sms` (nothing stored) when
its host is, or resolves to, a loopback, private, link-local, CGNAT, unique-local,
multicast or unspecified address, or when it carries user:password@; checked again
when posting, against a real local HTTP(S) server: the worker connects to the
address it checked (Host header and TLS name kept), and a name that has come to
resolve inside (DNS rebinding) is refused, not retried. App callbacks have a
queue of their own that every worker consumes."""

from __future__ import annotations

import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import func, select

from producer import InvalidMessage, callback_policy, db, send_sms
from producer import api as producer_api
from producer.models import AppNotification, Message
from producer.queues import NOTIFY_TASK, SEND_QUEUES, TASK_ROUTES, WORKER_QUEUES
from producer.settings import reload_settings
from producer.status import Status
from tests.tls_helpers import self_signed
from tests.unit.conftest import isolate, restore
from worker.edge.pinned import PinnedTransport
from worker.gateways.sandbox.server import free_port
from worker.store.transitions import move
from worker.tracking import notify

PUBLIC = ipaddress.ip_address("93.184.216.34")
FAKE_DNS: dict[str, list[str]] = {
    "good.test": ["93.184.216.34"],
    "evil.test": ["10.0.0.5"],
    "mixed.test": ["93.184.216.34", "127.0.0.1"],
    "metadata.test": ["169.254.169.254"],
}


REAL_RESOLVE = callback_policy.resolve


def fake_resolve(host: str, timeout: float = 0) -> list[callback_policy.Address]:
    """Names under .test from FAKE_DNS; `localhost` from the system's own resolver."""
    if host == "localhost":
        return REAL_RESOLVE(host)
    return [ipaddress.ip_address(a) for a in FAKE_DNS.get(host, [])]


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[list[list[str]]]:  # type: ignore[no-untyped-def]
    # No broker in unit tests: the limit counters are off (their own tests use a Redis).
    isolate(
        monkeypatch,
        tmp_path,
        SMSQ_KECCEL_TOKEN="k",
        SMSQ_API_KEYS="cb-key",
        SMSQ_API_KEY_LIMIT="off",
        SMSQ_RECIPIENT_LIMIT="off",
    )
    monkeypatch.setattr(callback_policy, "resolve", fake_resolve)
    published: list[list[str]] = []
    monkeypatch.setattr(
        producer_api, "publish_send", lambda ids, countdown=None, **_: published.append(ids)
    )
    monkeypatch.setattr(notify, "publish", lambda ids: None)
    yield published
    restore(monkeypatch)


def stored() -> int:
    with db.session() as s:
        return s.exec(select(func.count()).select_from(Message)).one()


REFUSED = [
    ("http://127.0.0.1:8000/cb", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::1]/cb", "loopback"),
    ("http://0x7f000001/cb", "loopback"),
    ("http://2130706433/cb", "loopback"),
    ("http://0177.0.0.1/cb", "loopback"),
    ("http://127.1/cb", "loopback"),
    ("http://user:pw@10.0.0.5/cb", "user:password@"),
    ("https://user@good.test/cb", "user:password@"),
    ("http://10.1.2.3/cb", "private"),
    ("http://172.16.0.1/cb", "private"),
    ("http://192.168.1.10/cb", "private"),
    ("http://100.64.0.1/cb", "carrier-grade NAT"),
    ("http://[fd12:3456::1]/cb", "unique-local"),
    ("http://[fe80::1]/cb", "link-local"),
    ("http://224.0.0.1/cb", "multicast"),
    ("http://[ff02::1]/cb", "multicast"),
    ("http://0.0.0.0/cb", "unspecified"),
    ("http://[::]/cb", "unspecified"),
    ("http://[::ffff:127.0.0.1]/cb", "loopback"),
    ("http://[::ffff:a9fe:a9fe]/cb", "link-local"),
    ("http://localhost:9000/cb", "loopback"),
    ("https://evil.test/cb", "resolves to 10.0.0.5, a private"),
    ("https://mixed.test/cb", "loopback"),
    ("https://metadata.test/cb", "link-local"),
]


@pytest.mark.parametrize(("url", "rule"), REFUSED)
def test_inside_callback_urls_are_refused_and_nothing_is_stored(
    store: list[list[str]], url: str, rule: str
) -> None:
    with pytest.raises(InvalidMessage) as info:
        send_sms("243851234567", "hi", callback_url=url)
    assert info.value.field == "callback_url" and rule in info.value.rule
    assert stored() == 0 and store == []


@pytest.mark.parametrize(
    "url", ["https://good.test/cb", "https://93.184.216.34:8443/cb", "https://app.example/cb"]
)
def test_public_and_not_yet_resolving_urls_are_accepted(store: list[list[str]], url: str) -> None:
    mid = send_sms("243851234567", "hi", callback_url=url)
    assert store == [[mid]]


def test_allow_private_lets_inside_addresses_through_but_never_credentials(
    store: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSQ_CALLBACK_ALLOW_PRIVATE", "true")
    reload_settings()
    assert send_sms("243851234567", "hi", callback_url="http://127.0.0.1:8000/cb")
    with pytest.raises(InvalidMessage, match="user:password@"):
        send_sms("243851234567", "hi", callback_url="http://u:p@127.0.0.1/cb")
    assert stored() == 1


def test_http_api_answers_422_on_callback_url(store: list[list[str]]) -> None:
    from worker.web import app

    with TestClient(app) as client:
        answer = client.post(
            "/v1/messages",
            json={"to": "243851234567", "text": "x", "callback_url": "http://169.254.169.254/"},
            headers={"Authorization": "Bearer cb-key"},
        )
    assert answer.status_code == 422 and answer.json()["field"] == "callback_url"
    assert stored() == 0


def test_app_callbacks_have_their_own_queue_that_every_worker_consumes() -> None:
    assert TASK_ROUTES[NOTIFY_TASK]["queue"] == "callbacks"
    routed = {route["queue"] for route in TASK_ROUTES.values()}
    assert routed <= set(WORKER_QUEUES.split(","))
    from worker.ops.stack import Stack

    command = Stack(data_dir=Path("unused")).worker_command()
    consumed = command[command.index("-Q") + 1].split(",")
    assert set(consumed) == routed | set(SEND_QUEUES.values())  # sends by priority


# --- posting: a real local server ------------------------------------------------


class Receiver:
    """A loopback HTTP(S) server that records each POST's Host header and body."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.got: list[tuple[str, dict[str, object]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.got.append((self.headers.get("Host", ""), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.stop()


def notification(url: str) -> int:
    """A message moved to `sent` with `url` as its callback (stored as if accepted)."""
    with db.session() as s:
        row = Message(
            to="243851234567", text="hi", provider="keccel", status="sending", callback_url=url
        )
        s.add(row)
        s.commit()
        assert move(s, row, Status.SENT, source="worker", provider_message_id="1")
        s.commit()
        note = s.exec(select(AppNotification)).one()
        assert note.id is not None
        return note.id


def note_state(note_id: int) -> AppNotification:
    with db.session() as s:
        note = s.get(AppNotification, note_id)
        assert note is not None
        return note


def test_a_name_that_now_resolves_inside_is_refused_when_posting(
    store: list[list[str]], receiver: Receiver
) -> None:
    FAKE_DNS["rebind.test"] = ["93.184.216.34"]  # what the check at send_sms saw
    note_id = notification(f"http://rebind.test:{receiver.port}/cb")
    FAKE_DNS["rebind.test"] = ["127.0.0.1"]  # and what it says when the worker posts
    try:
        counts = notify.deliver([note_id])
    finally:
        del FAKE_DNS["rebind.test"]
    assert counts == {"delivered": 0, "pending": 0, "failed": 1}
    assert receiver.got == []
    note = note_state(note_id)
    assert note.state == "failed" and "loopback" in (note.last_error or "")


def test_a_literal_inside_address_is_refused_when_posting(
    store: list[list[str]], receiver: Receiver
) -> None:
    note_id = notification(f"http://0x7f000001:{receiver.port}/cb")
    assert notify.deliver([note_id])["failed"] == 1
    assert receiver.got == [] and "refused" in (note_state(note_id).last_error or "")


def test_the_post_goes_to_the_checked_address_with_the_name_in_host(
    store: list[list[str]], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSQ_CALLBACK_ALLOW_PRIVATE", "true")
    reload_settings()
    # app.pinned.test is in no DNS: only the pinned address can reach the server
    FAKE_DNS["app.pinned.test"] = ["127.0.0.1"]
    try:
        note_id = notification(f"http://app.pinned.test:{receiver.port}/cb")
        assert notify.deliver([note_id])["delivered"] == 1
    finally:
        del FAKE_DNS["app.pinned.test"]
    ((host, body),) = receiver.got
    assert host == f"app.pinned.test:{receiver.port}" and body["status"] == "sent"


def test_https_keeps_the_server_name_and_certificate_check(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path, "DNS:app.pinned.test")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    running = Receiver(tls=server_tls)
    trust = ssl.create_default_context(cafile=str(cert))
    pinned = PinnedTransport(
        allow_private=True,
        resolver=lambda host: [ipaddress.ip_address("127.0.0.1")],
        verify=trust,
    )
    try:
        with httpx.Client(transport=pinned) as client:
            answer = client.post(f"https://app.pinned.test:{running.port}/cb", json={"id": "m"})
        assert answer.status_code == 200
        assert running.got == [(f"app.pinned.test:{running.port}", {"id": "m"})]
        # the certificate names app.pinned.test only: checked against the IP, it fails
        with pytest.raises(httpx.ConnectError), httpx.Client(verify=trust) as plain:
            plain.post(f"https://127.0.0.1:{running.port}/cb", json={"id": "m"})
    finally:
        running.stop()
