"""Resilience through the real stack: circuit breaker, fallback routing, uncertain sends.

Real worker and beat subprocesses, real HTTP to the simulators. The stack runs
with SMSQ_BREAKER_FAILURES=3 and SMSQ_BREAKER_COOLDOWN_SECONDS=3 (TEST_ENV).
A worker that died mid-send is simulated by doing its gateway request here
(the adapter, over HTTP, with the row's id as reference) and writing the row as
it would have been left: `sending`, claimed long ago.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from sqlmodel import select

from producer import db, send_sms
from producer.models import Message, MessageEvent, new_id, utcnow
from producer.queues import broker_url
from producer.settings import get_settings, provider_names, reload_settings
from producer.status import Status
from tests.integration.conftest import wait_for, wait_status
from worker.gateways.base import OutgoingMessage
from worker.gateways.registry import build_adapter
from worker.gateways.sandbox.base import Fault
from worker.resilience.breaker import Breaker
from worker.tracking.callback_urls import dlr_url_for

pytestmark = pytest.mark.integration


def unique_text(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:10]}"


def sim_messages(sim, text: str) -> list:  # type: ignore[no-untyped-def]
    return [m for m in list(sim.messages.values()) if m.text == text]


def events(mid: str, kind: str | None = None) -> list[MessageEvent]:
    with db.session() as s:
        query = select(MessageEvent).where(MessageEvent.message_id == mid)
        found = list(s.exec(query.order_by(MessageEvent.id)))  # type: ignore[arg-type]
    return [e for e in found if kind is None or e.kind == kind]


def send_503s(sim) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for r in list(sim.requests) if r.path.endswith("/message.asp") and r.status == 503)


@pytest.fixture
def breakers(stack) -> Iterator[dict[str, Breaker]]:  # type: ignore[no-untyped-def]
    """The stack's breakers (its Redis), closed before and after each test."""
    client = redis.Redis.from_url(broker_url())
    found = {name: Breaker(name, client) for name in provider_names()}
    for breaker in found.values():
        breaker.reset()
    yield found
    for breaker in found.values():
        breaker.reset()
    client.close()


@pytest.fixture
def routes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """DRC numbers go to keccel, with 1601SMS as the fallback (read by the producer)."""
    monkeypatch.setenv("SMSQ_ROUTES", "243=keccel|sms1601")
    reload_settings()
    yield
    monkeypatch.delenv("SMSQ_ROUTES")
    reload_settings()


def test_503_storm_opens_the_breaker_and_the_fallback_sends(  # type: ignore[no-untyped-def]
    stack, sims, breakers, routes
) -> None:
    text = unique_text("storm")
    before = send_503s(sims["keccel"])
    sims["keccel"].add_fault(Fault(status=503, times=1000))
    mid = send_sms("243851234561", text, provider="keccel")
    st = wait_status(mid, Status.DELIVERED, timeout=30)
    assert st.provider == "sms1601"
    assert st.note == "rerouted from keccel to sms1601: keccel circuit breaker open"
    # three failures opened the breaker; no keccel send was tried while it was open
    assert send_503s(sims["keccel"]) - before == 3
    assert sim_messages(sims["keccel"], text) == []
    [sent] = sim_messages(sims["sms1601"], text)
    assert sent.reference == mid and sent.id == st.provider_message_id
    attempts = [(e.provider, (e.note or "").split(": ")[1]) for e in events(mid, "attempt")]
    assert attempts == [
        ("keccel", "retryable error"),
        ("keccel", "retryable error"),
        ("keccel", "retryable error"),
        ("sms1601", "accepted (gateway id " + sent.id + ")"),
    ]
    assert st.attempts == 4
    [opened] = events(mid, "breaker")
    assert opened.note == (
        "circuit breaker of keccel opened after 3 retryable failures in a row: "
        "no calls to keccel for 3s"
    )
    [reroute] = events(mid, "reroute")
    assert reroute.provider == "sms1601"
    assert breakers["keccel"].snapshot().state in ("open", "half_open")


def test_without_fallback_a_message_waits_and_the_trial_closes_the_breaker(  # type: ignore[no-untyped-def]
    stack, sims, breakers
) -> None:
    breakers["keccel"].trip(6)
    text = unique_text("wait")
    mid = send_sms("243851234562", text, provider="keccel")  # no route: no fallback

    def waiting() -> bool:
        return any("waiting" in (e.note or "") for e in events(mid, "status"))

    wait_for(waiting, timeout=10)
    assert sim_messages(sims["keccel"], text) == []
    st = wait_status(mid, Status.DELIVERED, timeout=30)
    assert st.provider == "keccel"
    assert st.attempts == 1  # waiting was never an attempt
    assert len(sim_messages(sims["keccel"], text)) == 1
    assert [e.note for e in events(mid, "breaker")] == [
        "circuit breaker of keccel closed: the trial batch went through"
    ]
    assert breakers["keccel"].snapshot().state == "closed"


# -- uncertain sends -------------------------------------------------------------------
def crashed_send(provider: str, to: str, text: str, *, reached_gateway: bool) -> str:
    """What a worker killed between its HTTP request and storing the answer leaves."""
    mid = new_id()
    if reached_gateway:
        with build_adapter(provider) as adapter:
            outgoing = OutgoingMessage(ref=mid, to=to, text=text, dlr_url=dlr_url_for(provider))
            [result] = adapter.send([outgoing])
        assert result.accepted
    claimed = utcnow() - timedelta(seconds=get_settings().stuck_sending_seconds + 60)
    with db.session() as s:
        s.add(
            Message(
                id=mid,
                to=to,
                text=text,
                provider=provider,
                status=Status.SENDING.value,
                attempts=1,
                claimed_at=claimed,
                created_at=claimed,
                updated_at=claimed,
            )
        )
        s.commit()
    return mid


def reconcile_notes(mid: str) -> list[str]:
    return [e.note or "" for e in events(mid, "reconcile")]


@pytest.mark.parametrize(
    ("provider", "to"), [("sms1601", "31687654321"), ("kingsms", "22890443675")]
)
def test_stuck_send_the_gateway_has_is_reconciled_not_resent(  # type: ignore[no-untyped-def]
    stack, sims, provider: str, to: str
) -> None:
    text = unique_text("crashed")
    mid = crashed_send(provider, to, text, reached_gateway=True)
    [at_gateway] = sim_messages(sims[provider], text)
    st = wait_status(mid, Status.SENT, Status.DELIVERED, timeout=20)
    assert st.provider_message_id == at_gateway.id
    assert (st.note or "").startswith("uncertain send reconciled: ")
    [note] = reconcile_notes(mid)
    assert note.startswith(f"uncertain send (worker lost mid-send): {provider} lookup: found")
    wait_status(mid, Status.DELIVERED, timeout=20)  # polls (or pushes) follow
    assert len(sim_messages(sims[provider], text)) == 1
    assert st.attempts == 1


def test_stuck_send_the_gateway_never_got_is_resent_once(stack, sims) -> None:  # type: ignore[no-untyped-def]
    text = unique_text("never-sent")
    mid = crashed_send("sms1601", "31687654322", text, reached_gateway=False)
    st = wait_status(mid, Status.DELIVERED, timeout=30)
    [sent] = sim_messages(sims["sms1601"], text)
    assert sent.reference == mid and st.provider_message_id == sent.id
    [note] = reconcile_notes(mid)
    assert "sms1601 lookup: not found" in note
    moves = [(e.old_status, e.new_status) for e in events(mid, "status") if e.applied]
    assert moves[:2] == [("sending", "queued"), ("queued", "sending")]
    assert "a resend is safe" in (events(mid, "status")[0].note or "")


def test_stuck_send_where_the_gateway_cannot_tell_is_left_sent_not_resent(  # type: ignore[no-untyped-def]
    stack, sims
) -> None:
    text = unique_text("keccel-crashed")
    mid = crashed_send("keccel", "243851234563", text, reached_gateway=True)
    st = wait_status(mid, Status.SENT, timeout=20)
    assert st.provider_message_id is None
    assert (st.note or "").startswith("uncertain: not resent (worker lost mid-send; ")
    assert "keccel offers no lookup" in (st.note or "")
    wait_for(lambda: len(reconcile_notes(mid)) == 1, timeout=5)
    assert len(sim_messages(sims["keccel"], text)) == 1
