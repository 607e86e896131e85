"""Retry policy, attempt events, circuit breaker, fallbacks and the send-time guard,
through `worker.sending.send.send_messages` on a real SQLite store and a real Redis.

Only the gateway is fake (an adapter that answers what each test says), so the
decisions of sending.py are what is under test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import pytest
import redis
from sqlmodel import select

from producer import db
from producer.embedded_redis import ensure_embedded_redis, stop_embedded_redis
from producer.models import Message, MessageEvent, utcnow
from producer.settings import get_settings, reload_settings
from producer.status import Status
from tests.unit.conftest import isolate, restore
from worker.gateways.base import (
    OutgoingMessage,
    PermanentProviderError,
    RetryableProviderError,
    SendResult,
)
from worker.resilience.breaker import Breaker
from worker.sending import divert, record
from worker.sending import send as sending

DRC = "243851234567"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("send-redis")
    url = ensure_embedded_redis(data_dir)
    yield url
    stop_embedded_redis(data_dir)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path, redis_url: str) -> Iterator[None]:
    isolate(
        monkeypatch,
        tmp_path,
        SMSQ_BROKER_URL=redis_url,
        SMSQ_KECCEL_TOKEN="k-token",
        SMSQ_KINGSMS_API_KEY="king-key",
        SMSQ_KINGSMS_CLIENT_ID="7",
        SMSQ_SMS1601_USERNAME="user",
        SMSQ_SMS1601_PASSWORD="pw-1601",
        SMSQ_BREAKER_FAILURES="2",
        SMSQ_BREAKER_COOLDOWN_SECONDS="0.5",
        SMSQ_RETRY_BASE_SECONDS="0.1",
        SMSQ_RETRY_CAP_SECONDS="0.4",
    )
    redis.Redis.from_url(redis_url).flushdb()
    yield
    restore(monkeypatch)


Answer = Callable[[Sequence[OutgoingMessage]], list[SendResult]]


@dataclass
class FakeGateway:
    """An adapter whose answers a test queues; it records every batch it was given."""

    name: str
    answers: list[Answer | Exception] = field(default_factory=list)
    duplicate_window_seconds: float | None = None
    calls: list[list[str]] = field(default_factory=list)

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        self.calls.append([m.ref for m in batch])
        answer = self.answers.pop(0) if self.answers else accept
        if isinstance(answer, Exception):
            raise answer
        return answer(batch)


def accept(batch: Sequence[OutgoingMessage]) -> list[SendResult]:
    return [SendResult(m.ref, Status.SENT, f"gw-{m.ref[:6]}") for m in batch]


@pytest.fixture
def gateways(store: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeGateway]:
    fakes = {n: FakeGateway(n) for n in ("keccel", "smsclub", "kingsms", "sms1601")}
    monkeypatch.setattr(sending, "get_adapter", lambda name: fakes[name])
    return fakes


@dataclass
class Requeue:
    calls: list[tuple[list[str], float]] = field(default_factory=list)

    def __call__(self, ids: list[str], countdown: float) -> None:
        self.calls.append((list(ids), countdown))


def add_row(provider: str = "keccel", fallbacks: str = "", **kw: object) -> str:
    now = utcnow()
    row = Message(
        to=str(kw.pop("to", DRC)),
        text=str(kw.pop("text", "Your code is 4711")),
        provider=provider,
        fallbacks=fallbacks,
        created_at=now,
        updated_at=now,
        **kw,  # type: ignore[arg-type]
    )
    with db.session() as s:
        s.add(row)
        s.commit()
    return row.id


def row(mid: str) -> Message:
    with db.session() as s:
        found = s.get(Message, mid)
    assert found is not None
    return found


def events(mid: str, kind: str | None = None) -> list[MessageEvent]:
    with db.session() as s:
        query = select(MessageEvent).where(MessageEvent.message_id == mid)
        found = list(s.exec(query.order_by(MessageEvent.id)))  # type: ignore[arg-type]
    return [e for e in found if kind is None or e.kind == kind]


def notes(mid: str, kind: str) -> list[str]:
    return [e.note or "" for e in events(mid, kind)]


def send(mid: str, requeue: Requeue | None = None) -> sending.SendOutcome:
    """Run the send task's body for `mid`, first making the row claimable again."""
    with db.session() as s:
        r = s.get(Message, mid)
        assert r is not None
        assert r.status == Status.QUEUED.value, r.status
    return sending.send_messages([mid], requeue or Requeue())


# -- retry policy and attempt events ------------------------------------------------
def test_every_attempt_is_an_event_with_its_outcome(gateways: dict[str, FakeGateway]) -> None:
    gateways["keccel"].answers = [
        RetryableProviderError("keccel POST /message.asp: HTTP 503", code="503"),
        RetryableProviderError("keccel: too many", throttled=True, retry_after=3.0),
    ]
    mid = add_row()
    send(mid)
    send(mid)
    send(mid)
    assert notes(mid, "attempt") == [
        "attempt 1 via keccel: retryable error: keccel POST /message.asp: HTTP 503",
        "not an attempt via keccel: rate-limited by the gateway (keccel: too many): "
        "handed back for 3.0s, not counted",
        "attempt 2 via keccel: accepted (gateway id gw-" + mid[:6] + ")",
    ]
    final = row(mid)
    assert final.status == Status.SENT.value and final.attempts == 2


def test_permanent_error_is_recorded_and_never_retried(gateways: dict[str, FakeGateway]) -> None:
    gateways["keccel"].answers = [PermanentProviderError("keccel: Invalid token")]
    requeue = Requeue()
    mid = add_row()
    send(mid, requeue)
    assert row(mid).status == Status.FAILED.value
    assert row(mid).error == "keccel: Invalid token"
    assert notes(mid, "attempt") == ["attempt 1 via keccel: permanent error: keccel: Invalid token"]
    assert requeue.calls == []


def test_a_refused_message_is_a_permanent_attempt(gateways: dict[str, FakeGateway]) -> None:
    gateways["keccel"].answers = [
        lambda b: [SendResult(b[0].ref, Status.REJECTED, error="keccel rejected: bad number")]
    ]
    mid = add_row()
    send(mid)
    assert row(mid).status == Status.REJECTED.value
    assert notes(mid, "attempt") == [
        "attempt 1 via keccel: permanent error: keccel rejected: bad number"
    ]


def test_retry_after_is_honoured_exactly_and_429_is_not_counted(
    gateways: dict[str, FakeGateway],
) -> None:
    gateways["keccel"].answers = [
        RetryableProviderError("HTTP 429", throttled=True, retry_after=7.0),
        RetryableProviderError("HTTP 503", retry_after=11.0),
    ]
    requeue = Requeue()
    mid = add_row()
    send(mid, requeue)
    assert requeue.calls[-1][1] == 7.0
    assert row(mid).attempts == 0
    send(mid, requeue)
    assert requeue.calls[-1][1] == 11.0
    assert row(mid).attempts == 1
    # 429s never open the breaker, however many
    assert Breaker("keccel").snapshot().failures == 1


def test_backoff_is_exponential_jittered_and_capped(store: None) -> None:
    settings = get_settings()  # base 0.1, cap 0.4
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.4), (9, 0.4)]:
        delays = {record.backoff_delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, delays)
        assert len(delays) > 1  # jitter
    assert settings.retry_cap_seconds == 0.4
    assert record.backoff_delay(5, retry_after=42.0) == 42.0


def test_gives_up_after_max_attempts(
    gateways: dict[str, FakeGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSQ_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("SMSQ_BREAKER_FAILURES", "50")
    reload_settings()
    gateways["keccel"].answers = [RetryableProviderError("HTTP 503")] * 2
    requeue = Requeue()
    mid = add_row()
    send(mid, requeue)
    send(mid, requeue)
    final = row(mid)
    assert final.status == Status.FAILED.value
    assert final.error == "gave up after 2 attempt(s): HTTP 503"
    assert len(requeue.calls) == 1


def test_gives_up_past_the_deadline(
    gateways: dict[str, FakeGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSQ_RETRY_DEADLINE_SECONDS", "1")
    monkeypatch.setenv("SMSQ_RETRY_BASE_SECONDS", "30")
    monkeypatch.setenv("SMSQ_RETRY_CAP_SECONDS", "30")
    reload_settings()
    gateways["keccel"].answers = [RetryableProviderError("HTTP 503")]
    mid = add_row()
    send(mid)
    assert row(mid).status == Status.FAILED.value
    assert "gave up after 1 attempt(s)" in (row(mid).error or "")


# -- circuit breaker and fallbacks --------------------------------------------------
def open_keccel(gateways: dict[str, FakeGateway], mid: str) -> None:
    """Two retryable failures in a row (SMSQ_BREAKER_FAILURES=2) open keccel's breaker."""
    gateways["keccel"].answers = [RetryableProviderError("HTTP 503")] * 2
    send(mid)
    assert Breaker("keccel").snapshot().state == "closed"
    send(mid)
    assert Breaker("keccel").snapshot().state == "open"


def test_open_breaker_reroutes_to_the_fallback(gateways: dict[str, FakeGateway]) -> None:
    mid = add_row(fallbacks="sms1601")
    open_keccel(gateways, mid)
    assert [n for n in notes(mid, "breaker")] == [
        "circuit breaker of keccel opened after 2 retryable failures in a row: "
        "no calls to keccel for 0.5s"
    ]
    requeue = Requeue()
    outcome = send(mid, requeue)
    assert outcome.rerouted == 1
    assert len(gateways["keccel"].calls) == 2  # no call while open
    moved = row(mid)
    assert (moved.status, moved.provider, moved.fallbacks) == ("queued", "sms1601", "keccel")
    assert moved.attempts == 2  # the diverted claim is not an attempt
    assert requeue.calls == [([mid], 0.0)]
    assert notes(mid, "reroute") == ["rerouted from keccel to sms1601: keccel circuit breaker open"]
    send(mid)
    sent = row(mid)
    assert (sent.status, sent.provider, sent.attempts) == ("sent", "sms1601", 3)
    assert gateways["sms1601"].calls == [[mid]]


def test_without_a_fallback_messages_wait_for_the_cooldown(
    gateways: dict[str, FakeGateway],
) -> None:
    Breaker("keccel").trip(20)
    requeue = Requeue()
    mid = add_row()
    before = utcnow()
    outcome = send(mid, requeue)
    waiting = row(mid)
    assert outcome.waiting == 1 and gateways["keccel"].calls == []
    assert waiting.status == "queued" and waiting.attempts == 0
    [(ids, countdown)] = requeue.calls
    assert ids == [mid] and 19 < countdown <= 20
    assert waiting.next_attempt_at is not None
    assert waiting.next_attempt_at >= before + timedelta(seconds=19)
    assert "waiting" in events(mid, "status")[-1].note  # type: ignore[operator]


def test_half_open_trial_success_closes_the_breaker(gateways: dict[str, FakeGateway]) -> None:
    Breaker("keccel").trip(0.2)
    import time

    time.sleep(0.3)
    mid = add_row()
    send(mid)
    assert row(mid).status == "sent"
    assert Breaker("keccel").snapshot().state == "closed"
    assert notes(mid, "breaker") == [
        "circuit breaker of keccel closed: the trial batch went through"
    ]


def test_wait_past_the_deadline_fails(
    gateways: dict[str, FakeGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSQ_RETRY_DEADLINE_SECONDS", "5")
    reload_settings()
    Breaker("keccel").trip(60)
    mid = add_row()
    send(mid)
    failed = row(mid)
    assert failed.status == "failed" and failed.attempts == 0
    assert failed.error == "gave up: keccel circuit breaker open past the retry deadline"


def test_a_fallback_that_cannot_carry_the_text_is_not_used(
    gateways: dict[str, FakeGateway],
) -> None:
    Breaker("keccel").trip(20)
    long_text = "x" * 600  # keccel takes 765 characters, sms1601 459
    mid = add_row(fallbacks="sms1601", text=long_text, segments=4)
    send(mid)
    kept = row(mid)
    assert (kept.status, kept.provider) == ("queued", "keccel")
    assert "sms1601 cannot take it (text: has 600 characters" in (
        events(mid, "status")[-1].note or ""
    )
    assert gateways["sms1601"].calls == []


def test_fallback_choice_skips_unusable_providers(
    gateways: dict[str, FakeGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    mid = add_row(fallbacks="smsclub,kingsms,sms1601")
    Breaker("kingsms").trip(20)
    target, skipped = divert.fallback_for(row(mid))
    assert target == "sms1601"
    assert skipped == ["smsclub is not configured", "kingsms circuit breaker open"]
    flash = add_row(provider="kingsms", fallbacks="sms1601", flash=True)
    assert divert.fallback_for(row(flash)) == (
        None,
        ["sms1601 cannot take it (flash: not supported)"],
    )
    sender = add_row(provider="keccel", fallbacks="sms1601", sender="SHOP")
    assert divert.fallback_for(row(sender))[0] == "sms1601"


# -- the send-time guard ------------------------------------------------------------
def block(monkeypatch: pytest.MonkeyPatch, blocked: dict[str, str]) -> None:
    monkeypatch.setattr(
        "worker.sending.guard.account_block", lambda provider: blocked.get(provider)
    )


def test_guard_block_reroutes_without_calling_the_provider(
    gateways: dict[str, FakeGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    block(monkeypatch, {"keccel": "credits expired on 2026-01-31"})
    mid = add_row(fallbacks="sms1601")
    send(mid)
    assert gateways["keccel"].calls == []
    assert notes(mid, "reroute") == [
        "rerouted from keccel to sms1601: keccel account blocked: credits expired on 2026-01-31"
    ]
    send(mid)
    assert (row(mid).status, row(mid).provider, row(mid).attempts) == ("sent", "sms1601", 1)


def test_guard_block_without_fallback_fails_clearly_and_burns_nothing(
    gateways: dict[str, FakeGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    block(monkeypatch, {"keccel": "account inactive", "sms1601": "credits expired"})
    requeue = Requeue()
    alone = add_row()
    both = add_row(fallbacks="sms1601")
    sending.send_messages([alone, both], requeue)
    assert gateways["keccel"].calls == [] and gateways["sms1601"].calls == []
    assert requeue.calls == []
    assert (row(alone).status, row(alone).attempts) == ("failed", 0)
    assert row(alone).error == "not sent: keccel account blocked: account inactive; no fallback"
    assert row(both).error == (
        "not sent: keccel account blocked: account inactive; "
        "fallbacks: sms1601 account blocked: credits expired"
    )


# -- uncertain sends in the worker ----------------------------------------------------
@pytest.mark.parametrize(
    ("policy", "status"), [("reconcile", "sending"), ("resend", "queued"), ("fail", "failed")]
)
def test_unexpected_error_after_the_request_follows_the_policy(
    gateways: dict[str, FakeGateway], monkeypatch: pytest.MonkeyPatch, policy: str, status: str
) -> None:
    monkeypatch.setenv("SMSQ_UNCERTAIN_SEND", policy)
    reload_settings()
    gateways["keccel"].answers = [KeyError("messageID")]
    mid = add_row()
    send(mid)
    left = row(mid)
    assert left.status == status
    assert notes(mid, "attempt") == ["attempt 1 via keccel: uncertain: KeyError: 'messageID'"]
    if policy == "reconcile":  # the sweep asks the gateway later; nothing is resent now
        assert "the sweep will ask the gateway" in (left.note or "")
    assert len(gateways["keccel"].calls) == 1


# -- answers lost after the request -------------------------------------------------
LOST = RetryableProviderError("keccel POST /message.asp: timed out waiting", maybe_sent=True)
NEVER_REACHED = RetryableProviderError("keccel POST /message.asp: could not connect")


@pytest.mark.parametrize(
    ("policy", "status", "retried"),
    [("reconcile", "sending", False), ("resend", "queued", True), ("fail", "failed", False)],
)
def test_a_lost_answer_is_an_uncertain_send_not_a_plain_retry(  # type: ignore[no-untyped-def]
    gateways, monkeypatch: pytest.MonkeyPatch, policy: str, status: str, retried: bool
) -> None:
    monkeypatch.setenv("SMSQ_UNCERTAIN_SEND", policy)
    reload_settings()
    gateways["keccel"].answers = [LOST]
    requeue = Requeue()
    mid = add_row()
    send(mid, requeue)
    left = row(mid)
    assert left.status == status
    assert bool(requeue.calls) is retried
    assert len(gateways["keccel"].calls) == 1
    if policy != "resend":
        assert notes(mid, "attempt") == [f"attempt 1 via keccel: uncertain: answer lost: {LOST}"]


def test_a_request_that_never_reached_the_gateway_is_retried(gateways) -> None:  # type: ignore[no-untyped-def]
    gateways["keccel"].answers = [NEVER_REACHED]
    requeue = Requeue()
    mid = add_row()
    send(mid, requeue)
    assert row(mid).status == "queued" and requeue.calls


def test_smsclub_lost_answer_is_resent_within_its_duplicate_window(  # type: ignore[no-untyped-def]
    gateways, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SMSClub refuses the same message within 2 minutes (453), so a quick resend is safe."""
    gateways["smsclub"].duplicate_window_seconds = 120.0
    gateways["smsclub"].answers = [RetryableProviderError("smsclub: timed out", maybe_sent=True)]
    requeue = Requeue()
    mid = add_row("smsclub", to="380989361131", sender="SMSQ")
    send(mid, requeue)
    assert row(mid).status == "queued" and requeue.calls
    # ...but not once the backoff could carry the retry past the window.
    monkeypatch.setenv("SMSQ_RETRY_BASE_SECONDS", "100")
    monkeypatch.setenv("SMSQ_RETRY_CAP_SECONDS", "120")
    reload_settings()
    gateways["smsclub"].answers = [RetryableProviderError("smsclub: timed out", maybe_sent=True)]
    late = add_row("smsclub", to="380989361132", sender="SMSQ")
    send(late)
    assert row(late).status == "sending", notes(late, "attempt")


def test_the_duplicate_window_counts_from_the_first_lost_answer(  # type: ignore[no-untyped-def]
    gateways,
) -> None:
    """A lost answer stamps `maybe_sent_at`; a later lost answer keeps the first stamp;
    whatever delays the resend, it is only made while SMSClub would still refuse a
    copy (120 s from the first lost answer, less the timeout and a margin)."""
    club = gateways["smsclub"]
    club.duplicate_window_seconds = 120.0
    timed_out = RetryableProviderError("smsclub: timed out", maybe_sent=True)
    club.answers = [timed_out, timed_out]
    mid = add_row("smsclub", to="380989361131", sender="SMSQ")
    before = utcnow()
    send(mid)
    first = row(mid).maybe_sent_at
    assert first is not None and before <= first <= utcnow()
    send(mid)  # lost again: still the first stamp
    assert row(mid).status == "queued" and row(mid).maybe_sent_at == first
    assert len(club.calls) == 2

    # The backlog, the breaker or more faults held it until 2 minutes had passed.
    with db.session() as s:
        r = s.get(Message, mid)
        assert r is not None
        r.maybe_sent_at = utcnow() - timedelta(seconds=110)
        s.add(r)
        s.commit()
    send(mid)
    left = row(mid)
    assert len(club.calls) == 2  # not sent a third time: a copy might not be refused
    assert left.status == "sending" and left.claimed_by == "released"
    assert "would no longer refuse a copy (120 s window)" in (left.note or "")


def test_a_lost_answer_is_resent_through_an_open_breaker_while_copies_are_refused(  # type: ignore[no-untyped-def]
    gateways,
) -> None:
    """The breaker's cool-down could outlast SMSClub's 2-minute window: a message whose
    answer was lost is resent now (453 if the gateway has it), the others wait."""
    club = gateways["smsclub"]
    club.duplicate_window_seconds = 120.0
    club.answers = [RetryableProviderError("smsclub: timed out", maybe_sent=True)]
    lost = add_row("smsclub", to="380989361131", sender="SMSQ")
    send(lost)
    assert row(lost).maybe_sent_at is not None
    Breaker("smsclub").trip(60)
    fresh = add_row("smsclub", to="380989361132", sender="SMSQ")
    send(fresh)
    send(lost)
    assert club.calls == [[lost], [lost]]  # the resend went; the fresh one did not
    assert row(lost).status == "sent"
    assert row(fresh).status == "queued"
    assert "circuit breaker open" in (events(fresh, "status")[-1].note or "")


def test_a_message_whose_answer_was_lost_is_not_rerouted(gateways) -> None:  # type: ignore[no-untyped-def]
    """Another gateway would send a second copy of what the first one may have."""
    mid = add_row(
        "smsclub", fallbacks="sms1601", to="380989361131", sender="SMSQ", maybe_sent_at=utcnow()
    )
    target, skipped = divert.fallback_for(row(mid))
    assert target is None
    assert skipped == ["none: smsclub may have it already (an answer was lost)"]


@pytest.mark.parametrize(
    ("error", "maybe_sent"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("slow connect"), False),
        (httpx.PoolTimeout("pool"), False),
        (httpx.ReadTimeout("slow answer"), True),
        (httpx.WriteTimeout("slow upload"), True),
        (httpx.RemoteProtocolError("dropped"), True),
        (httpx.ReadError("reset"), True),
    ],
)
def test_transport_errors_say_whether_the_gateway_may_have_the_request(
    error: Exception, maybe_sent: bool
) -> None:
    from worker.gateways.keccel.adapter import KeccelAdapter

    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    adapter = KeccelAdapter(
        token="secret-token-1",
        base_url="http://gw",
        client=httpx.Client(transport=httpx.MockTransport(fail)),
    )
    with pytest.raises(RetryableProviderError) as caught:
        adapter.send([OutgoingMessage(ref="r1", to=DRC, text="hi", sender="GUEST")])
    assert caught.value.maybe_sent is maybe_sent
    assert "secret-token-1" not in str(caught.value)
