"""The web edge against a real uvicorn server over loopback: the API key is checked
before any body byte is read (a request that never sends its body still gets its
401), bodies are capped (413, declared or streamed), a 422 names the field without
echoing the body, odd credentials get 401/403 and never a 500 or a traceback.

Raw sockets, because an HTTP client would send the whole body before reading the
answer, and that is precisely what these tests must not do.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from sqlmodel import func, select

from producer import api as producer_api
from producer import db
from producer.models import Message, MessageEvent
from tests.unit.conftest import isolate, restore
from worker.gateways.sandbox.server import free_port
from worker.tracking.callback_urls import callback_token

KEY = "edge-test-key-1"
LIMIT = 4096


@dataclass
class Served:
    port: int
    published: list[list[str]]


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[Served]:  # type: ignore[no-untyped-def]
    isolate(
        monkeypatch,
        tmp_path,
        SMSQ_KECCEL_TOKEN="k",
        SMSQ_SMSCLUB_TOKEN="s",
        SMSQ_API_KEYS=KEY,
        # No broker here: the limits have their own tests on a real Redis (test_web_limits).
        SMSQ_API_KEY_LIMIT="off",
        SMSQ_RECIPIENT_LIMIT="off",
        SMSQ_MAX_BODY_BYTES=str(LIMIT),
        SMSQ_HTTP_MAX_BULK="3",
        SMSQ_CALLBACK_SECRET="edge-callback-secret",
        SMSQ_KECCEL_DLR_MODE="push",
    )
    published: list[list[str]] = []
    monkeypatch.setattr(
        producer_api, "publish_send", lambda ids, countdown=None, **_: published.append(ids)
    )
    from worker.web import app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield Served(port, published)
    server.should_exit = True
    thread.join(timeout=10)
    restore(monkeypatch)


def exchange(port: int, head: bytes, *body: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send `head` and `body` parts, then read one answer. A server that waits for
    more body than was sent times out here, and the test fails."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        for part in body:
            sock.sendall(part)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without an answer: {data!r}"
            data += chunk
        head_part, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head_part.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return int(head_part.split(b" ")[1]), rest[:length]


def request_head(path: str, *headers: bytes, method: bytes = b"POST") -> bytes:
    lines = [method + b" " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def counts() -> tuple[int, int]:
    with db.session() as s:
        messages = s.exec(select(func.count()).select_from(Message)).one()
        events = s.exec(select(func.count()).select_from(MessageEvent)).one()
    return messages, events


AUTH = b"Authorization: Bearer " + KEY.encode()
JSON = b"Content-Type: application/json"


def test_no_key_is_401_before_a_10mb_body_is_sent(served: Served) -> None:
    head = request_head("/v1/messages", JSON, b"Content-Length: 10000000")
    status, body = exchange(served.port, head, b'{"to": "2438')  # the rest never comes
    assert status == 401 and b"API key" in body
    assert counts() == (0, 0) and served.published == []


@pytest.mark.parametrize(
    "credential",
    ["Bearer ké".encode(), b"Bearer \xff\xfe", b"Bearer " + KEY.encode() + b"\xc3\xa9", b"Basic x"],
    ids=["utf8", "latin1-bytes", "key-plus-accent", "basic"],
)
def test_odd_credentials_are_401_never_500(served: Served, credential: bytes) -> None:
    head = request_head("/v1/messages", JSON, b"Authorization: " + credential, b"Content-Length: 5")
    status, _ = exchange(served.port, head, b"{...}")
    assert status == 401
    status, _ = exchange(
        served.port,
        request_head("/v1/messages/abc", b"Authorization: " + credential, method=b"GET"),
    )
    assert status == 401


def test_declared_oversized_body_is_413_before_it_is_sent(served: Served) -> None:
    head = request_head("/v1/messages", AUTH, JSON, f"Content-Length: {LIMIT + 1}".encode())
    status, body = exchange(served.port, head)  # no body byte sent at all
    assert status == 413 and b"SMSQ_MAX_BODY_BYTES" in body
    assert counts() == (0, 0)


def test_streamed_oversized_body_is_413_without_waiting_for_the_end(served: Served) -> None:
    head = request_head("/v1/messages", AUTH, JSON, b"Transfer-Encoding: chunked")
    chunk = b'{"to": "243851234567", "text": "' + b"A" * (LIMIT // 2)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    status, _ = exchange(served.port, head, framed, framed)  # never the closing 0-chunk
    assert status == 413
    assert counts() == (0, 0) and served.published == []


def test_a_422_names_the_field_and_does_not_echo_the_body(served: Served) -> None:
    payload = b'{"to": 5, "text": "' + b"Z" * 3000 + b'"}'
    head = request_head("/v1/messages", AUTH, JSON, f"Content-Length: {len(payload)}".encode())
    status, body = exchange(served.port, head, payload)
    assert status == 422
    assert b'"field":"to"' in body and b"ZZZZ" not in body and len(body) < 1000
    bad_json = b"{not json " + b"Y" * 2000
    head = request_head("/v1/messages", AUTH, JSON, f"Content-Length: {len(bad_json)}".encode())
    status, body = exchange(served.port, head, bad_json)
    assert status == 422 and b'"field":"body"' in body and b"YYYY" not in body


def test_more_recipients_than_the_bulk_limit_is_422_naming_to(served: Served) -> None:
    numbers = ["380989361131", "380671234567", "380989361132", "380989361133"]
    payload = (
        '{"to": ["' + '", "'.join(numbers) + '"], "text": "x", "provider": "smsclub"}'
    ).encode()
    head = request_head("/v1/messages", AUTH, JSON, f"Content-Length: {len(payload)}".encode())
    status, body = exchange(served.port, head, payload)
    assert status == 422 and b'"field":"to"' in body and b"SMSQ_HTTP_MAX_BULK" in body
    assert counts() == (0, 0) and served.published == []
    three = payload.replace(b', "380989361133"', b"")
    head = request_head("/v1/messages", AUTH, JSON, f"Content-Length: {len(three)}".encode())
    assert exchange(served.port, head, three)[0] == 201


def test_a_good_request_still_queues(served: Served) -> None:
    payload = b'{"to": "243851234567", "text": "hello"}'
    head = request_head("/v1/messages", AUTH, JSON, f"Content-Length: {len(payload)}".encode())
    status, _ = exchange(served.port, head, payload)
    assert status == 201 and counts()[0] == 1 and len(served.published) == 1


def test_dlr_token_is_checked_before_the_body_is_read(served: Served) -> None:
    head = request_head("/dlr/keccel/forged", JSON, b"Content-Length: 10000000")
    status, _ = exchange(served.port, head, b"{")
    assert status == 403
    good = f"/dlr/keccel/{callback_token('keccel')}"
    status, _ = exchange(served.port, request_head(good, JSON, b"Content-Length: 10000000"))
    assert status == 413
    assert counts() == (0, 0)


def test_a_non_ascii_dlr_token_is_403_without_a_traceback(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        for path in ("/dlr/keccel/k%C3%A9", "/dlr/keccel/%ED%A0%80", "/dlr/keccel/%FF"):
            status, _ = exchange(served.port, request_head(path, method=b"GET"))
            assert status == 403, path
    assert not [r for r in caplog.records if r.exc_info], "a refused token logged a traceback"
    assert counts() == (0, 0)
