"""Delivery tracking through the real stack: gateways' pushes reach the real web
process (uvicorn) over HTTP, polls are batched and counted at the simulators,
`both` mode falls back to polling, and applications get status callbacks.

The stack runs KING SMS PRO in `push`, Keccel and 1601SMS in `both` (grace
1.5 s) and SMSClub in `pull` (see TEST_ENV in conftest.py).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlmodel import select

from producer import db, send_bulk, send_sms
from producer.api import message_events
from producer.models import AppNotification, Message
from producer.status import Status
from tests.integration.conftest import wait_for, wait_status
from worker.tracking.callback_urls import callback_token, callback_url

pytestmark = pytest.mark.integration

GRACE = 1.5  # SMSQ_PUSH_GRACE_SECONDS in the stack


def row(mid: str) -> Message:
    with db.session() as s:
        found = s.get(Message, mid)
        assert found is not None
        return found


@pytest.fixture
def account_callback(sims) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Paste smsq's callback URLs into the Keccel and 1601SMS dashboards (the sims')."""
    for provider in ("keccel", "sms1601"):
        url = callback_url(provider)
        assert url is not None and callback_token(provider) in url
        sims[provider].update_account({"callback_url": url})
    yield
    for provider in ("keccel", "sms1601"):
        sims[provider].update_account({"callback_url": None})


@pytest.mark.parametrize(
    ("provider", "number"), [("keccel", "243851234561"), ("sms1601", "31612345671")]
)
def test_push_in_both_mode_delivers_and_cancels_the_polls(  # type: ignore[no-untyped-def]
    stack, sims, account_callback, provider: str, number: str
) -> None:
    mid = send_sms(number, f"push {uuid.uuid4().hex[:6]}", provider=provider)
    wait_status(mid, Status.DELIVERED)
    final = row(mid)
    assert final.next_poll_at is None
    time.sleep(GRACE + 1.0)  # past the grace: no poll may have been made
    events = message_events(mid)
    moves = [e for e in events if e["new_status"] == "delivered" and e["applied"]]
    assert [e["source"] for e in moves] == ["push"]
    assert not [e for e in events if e["source"] == "poll"]
    assert row(mid).poll_count == 0
    pushed = [p for p in sims[provider].pushes if final.provider_message_id in json.dumps(p)]
    assert pushed and all(p["status"] == 200 for p in pushed)


def test_both_mode_without_push_falls_back_to_polling_after_the_grace(stack, sims) -> None:  # type: ignore[no-untyped-def]
    assert sims["keccel"].callback_url is None  # the gateway will never push
    mid = send_sms("243851234562", f"no push {uuid.uuid4().hex[:6]}", provider="keccel")
    wait_status(mid, Status.DELIVERED)
    events = message_events(mid)
    sent = next(e for e in events if e["new_status"] == "sent")
    polled = [e for e in events if e["source"] == "poll"]
    assert polled, events
    waited = (
        datetime.fromisoformat(str(polled[0]["at"])) - datetime.fromisoformat(str(sent["at"]))
    ).total_seconds()
    assert waited >= GRACE  # no poll before the grace period was over


def test_kingsms_push_mode_gets_its_per_message_url_and_never_polls(stack, sims) -> None:  # type: ignore[no-untyped-def]
    before = sum(1 for r in sims["kingsms"].requests if r.path.endswith("/sms/trace"))
    ok = send_sms("22890443671", f"king {uuid.uuid4().hex[:6]}", provider="kingsms")
    bad = send_sms("22890443679", f"king {uuid.uuid4().hex[:6]}", provider="kingsms")
    wait_status(ok, Status.DELIVERED)
    wait_status(bad, Status.UNDELIVERED)
    for mid in (ok, bad):
        msg = sims["kingsms"].messages[row(mid).provider_message_id]
        assert msg.callback_url == callback_url("kingsms")
        assert [e["source"] for e in message_events(mid) if e["applied"]][-1] == "push"
    after = sum(1 for r in sims["kingsms"].requests if r.path.endswith("/sms/trace"))
    assert after == before


@pytest.mark.parametrize(
    ("number", "final"), [("22890443671", Status.DELIVERED), ("22890443679", Status.UNDELIVERED)]
)
def test_long_message_reported_per_part_is_final_only_with_its_last_part(  # type: ignore[no-untyped-def]
    stack, sims, number: str, final: Status
) -> None:
    sims["kingsms"].update_account({"per_part_reports": True})
    try:
        text = "Long message, three parts. " * 15  # 405 GSM characters: 3 parts
        mid = send_sms(number, text, provider="kingsms")
        assert row(mid).segments == 3
        wait_status(mid, final)
    finally:
        sims["kingsms"].update_account({"per_part_reports": False})
    events = message_events(mid)
    parts = [e for e in events if e["source"] == "push" and "part " in (e["note"] or "")]
    assert len(parts) == 3
    waiting = [e for e in parts if "waiting for the rest" in e["note"]]
    assert len(waiting) == 2  # parts 1 and 2 delivered: the message stayed sent
    last = parts[-1]
    assert last["new_status"] == final.value and "part 3/3" in last["note"]
    assert events.index(last) > max(events.index(e) for e in waiting)
    assert json.loads(row(mid).part_status or "{}") == {
        "1": "delivered",
        "2": "delivered",
        "3": final.value,
    }


def test_forged_malformed_and_unknown_callbacks_at_the_real_web(stack, account_callback) -> None:  # type: ignore[no-untyped-def]
    mid = send_sms("243851234563", f"forge {uuid.uuid4().hex[:6]}", provider="keccel")
    wait_status(mid, Status.SENT, Status.DELIVERED)
    pid = row(mid).provider_message_id
    events_before = len(message_events(mid))
    web = stack.web_url
    token = callback_token("keccel")
    with httpx.Client(timeout=5) as http:
        forged = http.get(
            f"{web}/dlr/keccel/{'0' * 40}", params={"messageID": pid, "status": "FAILED"}
        )
        wrong_provider = http.get(
            f"{web}/dlr/keccel/{callback_token('sms1601')}",
            params={"messageID": pid, "status": "FAILED"},
        )
        malformed = http.get(f"{web}/dlr/keccel/{token}", params={"status": "FAILED"})
        garbage = http.post(
            f"{web}/dlr/keccel/{token}", content=b"\x00\xff garbage", headers={"X": "y"}
        )
        unknown = http.get(
            f"{web}/dlr/keccel/{token}", params={"messageID": "no-such-id", "status": "DELIVERED"}
        )
    assert (forged.status_code, wrong_provider.status_code) == (403, 403)
    assert (malformed.status_code, garbage.status_code) == (400, 400)
    assert unknown.status_code == 200 and unknown.json()["unknown"] == 1
    wait_status(mid, Status.DELIVERED)  # the real push still lands
    status_moves = [e for e in message_events(mid)[events_before:] if e["applied"]]
    assert all(e["source"] == "push" and e["new_status"] == "delivered" for e in status_moves)
    assert row(mid).status == "delivered"


def test_smsclub_polls_are_batched_100_ids_a_request(stack, sims) -> None:  # type: ignore[no-untyped-def]
    sim = sims["smsclub"]
    first = len(sim.requests)
    numbers = [f"38098{i:06d}1" for i in range(250)]
    mids = send_bulk(numbers, f"batch {uuid.uuid4().hex[:6]}", provider="smsclub")

    def all_final() -> bool:
        with db.session() as s:
            statuses = s.exec(select(Message.status).where(Message.id.in_(mids))).all()  # type: ignore[union-attr]
        return all(st == "delivered" for st in statuses)

    wait_for(all_final, timeout=60)
    polls = [r for r in sim.requests[first:] if r.path.endswith("/sms/status")]
    sends = [r for r in sim.requests[first:] if r.path.endswith("/sms/send")]
    assert len(sends) == 3  # 100 + 100 + 50 numbers
    assert polls and max(r.recipients for r in polls) <= 100
    assert sum(r.recipients for r in polls) >= 250  # every message asked at least once
    assert len(polls) / len(mids) <= 0.05, (len(polls), [r.recipients for r in polls])


class _AppServer:
    """The user's web app: records status callbacks; the first POST gets a 500."""

    def __init__(self) -> None:
        self.got: list[dict[str, object]] = []
        self.answered: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code = 500 if not outer.answered else 200
                outer.answered.append(code)
                outer.got.append(json.loads(body))
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms-status"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_application_gets_every_status_change_retried_in_order(stack) -> None:  # type: ignore[no-untyped-def]
    app = _AppServer()
    try:
        mid = send_sms("380989361137", "callback me", provider="smsclub", callback_url=app.url)
        wait_status(mid, Status.DELIVERED)
        wait_for(lambda: [g for g in app.got if g["status"] == "delivered"], timeout=30)
    finally:
        app.close()
    assert app.answered[0] == 500  # the first POST failed and was retried
    mine = [g for g in app.got if g["id"] == mid]
    firsts = list(dict.fromkeys(g["event_id"] for g in mine))  # type: ignore[misc]
    statuses = [next(g["status"] for g in mine if g["event_id"] == e) for e in firsts]
    assert statuses == ["sent", "delivered"]
    assert mine[0]["event_id"] == mine[1]["event_id"]  # the retry is the same event
    last = mine[-1]
    assert last["provider"] == "smsclub" and last["error"] is None and last["time"]
    assert set(last) >= {"id", "status", "provider", "error", "time", "event_id"}
    with db.session() as s:
        states = s.exec(
            select(AppNotification.state).where(AppNotification.message_id == mid)
        ).all()
    assert sorted(states) == ["delivered", "delivered"]


def test_metrics_count_sends_statuses_polls_and_callbacks(stack) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(timeout=5) as http:
        text = http.get(f"{stack.web_url}/metrics").text
        health = http.get(f"{stack.web_url}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    for needle in (
        'smsq_send_requests_total{provider="smsclub"}',
        'smsq_messages_total{provider="smsclub",status="delivered"}',
        'smsq_status_polls_total{provider="smsclub"}',
        'smsq_dlr_callbacks_total{provider="kingsms",result="accepted"}',
    ):
        line = next((ln for ln in text.splitlines() if ln.startswith(needle)), None)
        assert line is not None, needle
        assert float(line.split()[-1]) > 0, line
    # The store's gauge counts what is still moving (0 once drained); final messages
    # are counted by smsq_messages_total, not by reading the history on every scrape.
    assert 'smsq_messages_by_status{provider="keccel",status="queued"}' in text
    assert 'smsq_messages_by_status{provider="keccel",status="delivered"}' not in text
