"""Traffic classes through the real stack (worker, beat, the gateway simulators): a code
the gateway could not take within its ttl ends `expired`, never sent, and the app hears
of it; a bulk message due inside quiet hours waits and beat releases it at their end."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import pytest

from producer import get_status, send_bulk, send_sms
from producer.settings import reload_settings
from producer.status import Status
from tests.integration.conftest import book, sim, wait_for, wait_status
from worker.gateways.sandbox.base import Fault

pytestmark = pytest.mark.integration
KYIV = "380989361137"  # Europe/Kyiv only; the smsclub simulator delivers it


class _App:
    """The user's web app: records the status callbacks it is POSTed."""

    def __init__(self) -> None:
        self.got: list[dict[str, object]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.got.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms-status"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def app() -> Iterator[_App]:
    server = _App()
    yield server
    server.close()


def test_a_code_not_sent_within_its_ttl_expires_and_is_never_sent(stack, sims, app) -> None:  # type: ignore[no-untyped-def]
    text = f"code {uuid.uuid4().hex[:8]}"
    sim(stack, "smsclub").add_fault(Fault(status=503, times=10_000))  # down all along
    mid = send_sms(KYIV, text, provider="smsclub", priority="high", ttl=2, callback_url=app.url)
    expired = wait_status(mid, Status.EXPIRED, timeout=30)
    assert expired.error.startswith("expired: not sent within its validity (ttl 2 s")
    assert expired.priority == "high"
    sim(stack, "smsclub").faults.clear()  # the gateway is back: nothing stale goes out
    wait_for(lambda: [g for g in app.got if g["id"] == mid and g["status"] == "expired"])
    later = send_sms(KYIV, text + " fresh", provider="smsclub", priority="high", ttl=60)
    wait_status(later, Status.SENT, Status.DELIVERED, timeout=30)
    assert get_status(mid).status == "expired"  # type: ignore[union-attr]
    assert book(stack, "smsclub", [text]) == {}


def test_bulk_inside_quiet_hours_waits_until_beat_releases_it(stack, sims, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    local = datetime.now(ZoneInfo("Europe/Kyiv"))
    end = local + timedelta(seconds=4)
    monkeypatch.setenv("SMSQ_QUIET_HOURS", f"{local - timedelta(hours=1):%H:%M}-{end:%H:%M:%S}")
    reload_settings()
    text = f"night sale {uuid.uuid4().hex[:8]}"
    try:
        [held] = send_bulk([KYIV], text, provider="smsclub")
        [now] = send_bulk([KYIV], text + " now", provider="smsclub", quiet_hours=False)
    finally:
        monkeypatch.delenv("SMSQ_QUIET_HOURS")
        reload_settings()
    st = get_status(held)
    assert st is not None and st.status == "scheduled" and st.priority == "bulk"
    assert st.note is not None and st.note.startswith("quiet hours: ")
    assert st.send_at is not None and abs(st.send_at - end.astimezone(UTC)) < timedelta(seconds=1)
    wait_status(now, Status.SENT, Status.DELIVERED)  # quiet_hours=False: at once
    released = wait_status(held, Status.SENT, Status.DELIVERED, timeout=30)
    [msg] = [m for m in sim(stack, "smsclub").messages.values() if m.text == text]
    assert msg.created >= st.send_at.timestamp()  # the gateway got it after the window
    assert released.sent_at is not None and released.sent_at >= st.send_at
