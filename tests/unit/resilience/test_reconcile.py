"""Uncertain sends: the gateways' lookups (against the simulators over HTTP) and the
SMSQ_UNCERTAIN_SEND policies applied by the sweep (on a real SQLite store)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlmodel import select

from producer import db
from producer.models import Message, MessageEvent, utcnow
from producer.settings import reload_settings
from producer.status import Status
from tests.unit.conftest import isolate, restore
from worker.gateways.base import LookupResult, OutgoingMessage, RetryableProviderError
from worker.gateways.keccel.adapter import KeccelAdapter
from worker.gateways.kingsms.adapter import KingSmsAdapter
from worker.gateways.sandbox.base import sandbox_credentials
from worker.gateways.sandbox.server import RunningSandbox, start_in_thread
from worker.gateways.sms1601 import adapter as sms1601_module
from worker.gateways.sms1601.adapter import Sms1601Adapter
from worker.gateways.smsclub.adapter import SmsClubAdapter
from worker.resilience import reconcile
from worker.resilience import sweeps as maintenance


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    running = start_in_thread(delivery_seconds=0.2)
    yield running
    running.stop()


@pytest.fixture
def sims(sandbox: RunningSandbox):  # type: ignore[no-untyped-def]
    for sim in sandbox.sandbox.sims.values():
        sim.reset()
    return sandbox.sandbox.sims


def sms1601(sandbox: RunningSandbox) -> Sms1601Adapter:
    creds = sandbox_credentials("sms1601")
    return Sms1601Adapter(
        username=creds["username"],
        password=creds["password"],
        base_url=sandbox.base_url("sms1601"),
        client=httpx.Client(timeout=5),
    )


def kingsms(sandbox: RunningSandbox) -> KingSmsAdapter:
    creds = sandbox_credentials("kingsms")
    return KingSmsAdapter(
        api_key=creds["api_key"],
        client_id=creds["client_id"],
        base_url=sandbox.base_url("kingsms"),
        client=httpx.Client(timeout=5),
    )


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


# -- the gateways' lookups ---------------------------------------------------------------
def test_sms1601_finds_a_message_by_its_reference(sandbox: RunningSandbox, sims) -> None:  # type: ignore[no-untyped-def]
    adapter = sms1601(sandbox)
    since = ago(5)
    [sent] = adapter.send([OutgoingMessage(ref="a" * 32, to="31612345671", text="hallo")])
    adapter.send([OutgoingMessage(ref="b" * 32, to="31612345672", text="hallo")])
    found = adapter.find_sent("a" * 32, "31612345671", "hallo", since)
    assert (found.state, found.provider_message_id) == ("found", sent.provider_message_id)
    missing = adapter.find_sent("c" * 32, "31612345673", "hallo", since)
    assert missing.state == "not_found"


def test_sms1601_cannot_tell_when_a_line_without_reference_could_be_ours(
    sandbox: RunningSandbox,
    sims,  # type: ignore[no-untyped-def]
) -> None:
    adapter = sms1601(sandbox)
    since = ago(5)
    # a batch request carries no referentie: its lines could be anyone's message
    adapter.send(
        [
            OutgoingMessage(ref="x" * 32, to="31612345671", text="batch"),
            OutgoingMessage(ref="y" * 32, to="31612345672", text="batch"),
        ]
    )
    assert adapter.find_sent("z" * 32, "31612345671", "batch", since).state == "unknown"
    # ... but a line to another number is not ours
    assert adapter.find_sent("z" * 32, "31612345673", "batch", since).state == "not_found"


def test_sms1601_cannot_tell_when_the_report_does_not_reach_back(
    sandbox: RunningSandbox,
    sims,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sms1601_module, "REPORT_LOOKBACK", 2)
    adapter = sms1601(sandbox)
    since = ago(5)
    for n in range(3):
        adapter.send([OutgoingMessage(ref=f"{n}" * 32, to=f"3161234567{n + 1}", text="t")])
    answer = adapter.find_sent("q" * 32, "31612345679", "t", since)
    assert answer.state == "unknown" and "does not reach back" in answer.detail


def test_kingsms_finds_a_message_by_number_text_and_time(sandbox: RunningSandbox, sims) -> None:  # type: ignore[no-untyped-def]
    adapter = kingsms(sandbox)
    since = ago(5)
    [sent] = adapter.send([OutgoingMessage(ref="r1", to="22890443671", text="bonjour")])
    adapter.send([OutgoingMessage(ref="r2", to="22890443672", text="bonjour")])
    found = adapter.find_sent("r1", "22890443671", "bonjour", since)
    assert (found.state, found.provider_message_id) == ("found", sent.provider_message_id)
    assert adapter.find_sent("r3", "22890443671", "autre texte", since).state == "not_found"
    assert adapter.find_sent("r3", "22890443673", "bonjour", since).state == "not_found"
    # a record sent well before the claim is not ours
    later = datetime.now(UTC) + timedelta(minutes=10)
    assert adapter.find_sent("r1", "22890443671", "bonjour", later).state == "not_found"


def test_kingsms_cannot_tell_between_two_identical_messages(sandbox: RunningSandbox, sims) -> None:  # type: ignore[no-untyped-def]
    adapter = kingsms(sandbox)
    since = ago(5)
    for ref in ("r1", "r2"):
        adapter.send([OutgoingMessage(ref=ref, to="22890443671", text="same")])
    assert adapter.find_sent("r1", "22890443671", "same", since).state == "unknown"


def test_keccel_and_smsclub_cannot_tell() -> None:
    keccel = KeccelAdapter(token="t", base_url="http://127.0.0.1:1")
    smsclub = SmsClubAdapter(token="t", base_url="http://127.0.0.1:1")
    for adapter in (keccel, smsclub):
        answer = adapter.find_sent("id", "243851234567", "hi", ago(5))
        assert answer.state == "unknown" and "offers no lookup" in answer.detail


# -- the policies ----------------------------------------------------------------------
@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[None]:
    isolate(monkeypatch, tmp_path, SMSQ_SMS1601_USERNAME="u", SMSQ_SMS1601_PASSWORD="p")
    yield
    restore(monkeypatch)


@dataclass
class Lookups:
    answer: LookupResult | Exception
    asked: list[tuple[str, str, str, datetime]] = field(default_factory=list)
    duplicate_window_seconds: float | None = None

    def find_sent(self, ref: str, to: str, text: str, since: datetime) -> LookupResult:
        self.asked.append((ref, to, text, since))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def use(
    monkeypatch: pytest.MonkeyPatch, answer: LookupResult | Exception, window: float | None = None
) -> Lookups:
    fake = Lookups(answer, duplicate_window_seconds=window)
    monkeypatch.setattr(reconcile, "get_adapter", lambda name: fake)
    return fake


def stuck_row(
    claimed_seconds_ago: float = 400,
    attempts: int = 1,
    provider: str = "sms1601",
    claimed_by: str | None = None,
) -> str:
    claimed = utcnow() - timedelta(seconds=claimed_seconds_ago)
    row = Message(
        to="31612345671",
        text="stuck",
        provider=provider,
        status=Status.SENDING.value,
        attempts=attempts,
        claimed_at=claimed,
        claimed_by=claimed_by,
        created_at=claimed,
        updated_at=claimed,
    )
    with db.session() as s:
        s.add(row)
        s.commit()
    return row.id


def get(mid: str) -> Message:
    with db.session() as s:
        found = s.get(Message, mid)
    assert found is not None
    return found


def kinds(mid: str) -> list[tuple[str, str | None]]:
    with db.session() as s:
        query = select(MessageEvent).where(MessageEvent.message_id == mid)
        found = s.exec(query.order_by(MessageEvent.id)).all()  # type: ignore[arg-type]
    return [(e.kind, e.note) for e in found]


def test_found_becomes_sent_with_the_gateway_id_and_a_poll(
    store: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = use(monkeypatch, LookupResult("found", "777", detail="report lists 777"))
    mid = stuck_row()
    assert maintenance._settle_stuck_sending() == 1
    row = get(mid)
    assert (row.status, row.provider_message_id) == ("sent", "777")
    assert row.next_poll_at is not None
    assert row.note == "uncertain send reconciled: report lists 777"
    [(ref, to, text, since)] = fake.asked
    assert (ref, to, text) == (mid, "31612345671", "stuck")
    assert since < utcnow() - timedelta(seconds=400)  # from the claim, with slack
    assert (
        "reconcile",
        "uncertain send (worker lost mid-send): sms1601 lookup: found: report lists 777",
    ) in kinds(mid)


def test_confirmed_not_found_is_queued_again(store: None, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, LookupResult("not_found", detail="no line with our reference"))
    mid = stuck_row()
    maintenance._settle_stuck_sending()
    row = get(mid)
    assert row.status == "queued" and row.next_attempt_at is not None
    assert "a resend is safe" in (row.note or "")


def test_cannot_tell_leaves_it_sent_without_id_and_never_resends(
    store: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, LookupResult("unknown", detail="keccel offers no lookup of a sent message"))
    mid = stuck_row()
    maintenance._settle_stuck_sending()
    row = get(mid)
    assert (row.status, row.provider_message_id, row.next_poll_at) == ("sent", None, None)
    assert (row.note or "").startswith("uncertain: not resent (worker lost mid-send; keccel")


@pytest.mark.parametrize(("claimed_ago", "resent"), [(65, True), (100, False)])
def test_cannot_tell_within_a_copy_window_is_resent_once_past_it_never(
    store: None, monkeypatch: pytest.MonkeyPatch, claimed_ago: float, resent: bool
) -> None:
    """SMSClub refuses a copy for 2 minutes. A given-up claim settled 65 s after it
    (the sweep's first look, after LOOKUP_RETRY_SECONDS) is queued again, with the
    claim as its first possible send: a copy the gateway has comes back 453, one it
    never got is sent. 100 s after, too little of the window is left (less the 10 s
    timeout, the margin and the queue's slack): it stays `sent` without an id."""
    use(monkeypatch, LookupResult("unknown", detail="smsclub offers no lookup"), window=120.0)
    # A claim given up (the worker's answer was lost), as a dead worker's would be.
    mid = stuck_row(claimed_seconds_ago=claimed_ago, provider="smsclub", claimed_by="released")
    claimed_at = get(mid).claimed_at
    maintenance._settle_stuck_sending()
    row = get(mid)
    if resent:
        assert (row.status, row.maybe_sent_at) == ("queued", claimed_at)
        assert "resent while smsclub still refuses a copy" in (row.note or "")
    else:
        assert (row.status, row.provider_message_id) == ("sent", None)
        assert (row.note or "").startswith("uncertain: not resent")


def test_a_failed_lookup_is_asked_again_later(store: None, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = use(monkeypatch, RetryableProviderError("sms1601: HTTP 503"))
    mid = stuck_row()
    maintenance._settle_stuck_sending()
    assert get(mid).status == "sending"
    maintenance._settle_stuck_sending()  # too soon: not asked again
    assert len(fake.asked) == 1
    with db.session() as s:  # LOOKUP_RETRY_SECONDS later
        row = s.get(Message, mid)
        assert row is not None
        row.updated_at = utcnow() - timedelta(seconds=reconcile.LOOKUP_RETRY_SECONDS + 1)
        s.add(row)
        s.commit()
    fake.answer = LookupResult("found", "9")
    maintenance._settle_stuck_sending()
    assert (get(mid).status, get(mid).provider_message_id) == ("sent", "9")


@pytest.mark.parametrize(("policy", "status"), [("resend", "queued"), ("fail", "failed")])
def test_resend_and_fail_policies_do_not_ask(
    store: None, monkeypatch: pytest.MonkeyPatch, policy: str, status: str
) -> None:
    monkeypatch.setenv("SMSQ_UNCERTAIN_SEND", policy)
    reload_settings()
    fake = use(monkeypatch, LookupResult("found", "1"))
    mid = stuck_row()
    maintenance._settle_stuck_sending()
    assert get(mid).status == status
    assert fake.asked == []
    assert any(f"SMSQ_UNCERTAIN_SEND={policy}" in (note or "") for _, note in kinds(mid))


def test_a_resend_never_goes_past_max_attempts(
    store: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSQ_MAX_ATTEMPTS", "3")
    reload_settings()
    use(monkeypatch, LookupResult("not_found"))
    mid = stuck_row(attempts=3)
    maintenance._settle_stuck_sending()
    assert get(mid).status == "failed"
    assert "3 attempt(s) are used up" in (get(mid).error or "")


def test_only_rows_stuck_past_the_cutoff_are_settled(
    store: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = use(monkeypatch, LookupResult("found", "1"))
    fresh = stuck_row(claimed_seconds_ago=10)  # a live worker may still be on it
    assert maintenance._settle_stuck_sending() == 0
    assert get(fresh).status == "sending" and fake.asked == []
