"""A dead worker's claimed rows settle within a minute; a live one's are left alone.

Real SQLite store and a real (embedded) Redis; `reconcile.settle` is replaced by
a recorder where the test is about which rows beat picks, not how it settles them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta

import pytest
import redis

from producer import db
from producer.embedded_redis import ensure_embedded_redis, stop_embedded_redis
from producer.models import Message, utcnow
from producer.status import Status
from tests.unit.conftest import NO_BROKER, isolate, restore
from worker.gateways.base import OutgoingMessage, SendResult
from worker.resilience import liveness, reconcile
from worker.resilience import sweeps as maintenance
from worker.sending import send as sending
from worker.store.transitions import claim


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("liveness-redis")
    url = ensure_embedded_redis(data_dir)
    yield url
    stop_embedded_redis(data_dir)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path, redis_url: str) -> Iterator[redis.Redis]:
    isolate(monkeypatch, tmp_path, SMSQ_BROKER_URL=redis_url, SMSQ_KECCEL_TOKEN="k-token")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    monkeypatch.setattr(liveness, "TRUST_AFTER", 0)  # the test's Redis is seconds old
    yield client
    restore(monkeypatch)


@pytest.fixture
def settled(store: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids beat hands to reconcile.settle."""
    seen: list[str] = []

    def record(ids: Sequence[str], *, source: str, cause: str) -> reconcile.Settled:
        seen.extend(ids)
        return reconcile.Settled()

    monkeypatch.setattr(reconcile, "settle", record)
    return seen


def sending_row(age: float, claimed_by: str | None, *, touched: float | None = None) -> str:
    """A row `sending` since `age` seconds ago, claimed by `claimed_by`."""
    claimed = utcnow() - timedelta(seconds=age)
    touched_at = claimed if touched is None else utcnow() - timedelta(seconds=touched)
    row = Message(
        to="243851234567",
        text="Your code is 4711",
        provider="keccel",
        status=Status.SENDING.value,
        attempts=1,
        claimed_at=claimed,
        claimed_by=claimed_by,
        created_at=claimed,
        updated_at=touched_at,
    )
    with db.session() as s:
        s.add(row)
        s.commit()
    return row.id


def beating(client: redis.Redis, name: str) -> str:
    client.set(liveness.KEY.format(name), "1", ex=liveness.TTL_SECONDS)
    return name


def load(mid: str) -> Message:
    with db.session() as s:
        found = s.get(Message, mid)
    assert found is not None
    return found


# -- the heartbeat -----------------------------------------------------------------
def test_a_claim_names_this_process_and_starts_its_heartbeat(store: redis.Redis) -> None:
    mid = sending_row(0, None)
    with db.session() as s:
        s.get(Message, mid).status = Status.QUEUED.value  # type: ignore[union-attr]
        s.commit()
        assert claim(s, mid, utcnow())
        s.commit()
    me = liveness.process_id()
    assert load(mid).claimed_by == me
    ttl = store.ttl(liveness.KEY.format(me))
    assert 0 < ttl <= liveness.TTL_SECONDS
    assert liveness.dead([me]) == set()


def test_only_processes_that_stopped_beating_are_dead(store: redis.Redis) -> None:
    alive = beating(store, "host-a:11:aaaa")
    assert liveness.dead([alive, "host-b:12:bbbb", alive]) == {"host-b:12:bbbb"}
    assert liveness.dead([]) == set()


def test_nobody_is_dead_while_redis_is_young_or_unreachable(
    store: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(liveness, "TRUST_AFTER", 10**9)  # restarted, maybe without its data
    assert liveness.dead(["host-b:12:bbbb"]) == set()
    monkeypatch.setattr(liveness, "TRUST_AFTER", 0)
    monkeypatch.setenv("SMSQ_BROKER_URL", NO_BROKER)
    from producer.queues import broker_url
    from producer.settings import reload_settings

    reload_settings()
    broker_url.cache_clear()
    assert liveness.dead(["host-b:12:bbbb"]) == set()


def test_a_warm_stop_drops_the_heartbeat(store: redis.Redis) -> None:
    liveness.stop_heartbeat()
    me = liveness.ensure_heartbeat()
    assert store.exists(liveness.KEY.format(me))
    liveness.stop_heartbeat()
    assert not store.exists(liveness.KEY.format(me))
    assert liveness.ensure_heartbeat() == me  # and it starts again for the next claim
    assert store.exists(liveness.KEY.format(me))


# -- what beat settles ---------------------------------------------------------------
def test_beat_settles_dead_and_released_claims_and_leaves_live_ones(
    store: redis.Redis, settled: list[str]
) -> None:
    live = beating(store, "host-a:11:aaaa")
    dead_claim = sending_row(60, "host-b:12:bbbb")
    released = sending_row(60, liveness.RELEASED)
    live_claim = sending_row(60, live)
    fresh_dead = sending_row(10, "host-b:12:bbbb")  # maybe still in its HTTP call
    legacy = sending_row(60, None)  # claimed before migration 0004: the long bound only
    hung = sending_row(400, live)  # alive but stuck past SMSQ_STUCK_SENDING_SECONDS
    just_asked = sending_row(60, liveness.RELEASED, touched=5)  # lookup failed 5 s ago
    # Past DEAD_AFTER and never asked about: settled now, not LOOKUP_RETRY_SECONDS on.
    unasked = sending_row(liveness.DEAD_AFTER + 2, "host-b:12:bbbb")
    asked = sending_row(liveness.DEAD_AFTER + 2, "host-b:12:bbbb", touched=10)
    maintenance._settle_stuck_sending()
    assert sorted(settled) == sorted([dead_claim, released, hung, unasked])
    for mid in (live_claim, fresh_dead, legacy, just_asked, asked):
        assert mid not in settled


def test_stuck_sending_seconds_is_the_bound_for_live_claims(
    store: redis.Redis, settled: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    live = beating(store, "host-a:11:aaaa")
    old = sending_row(130, live)
    younger = sending_row(90, live)
    monkeypatch.setenv("SMSQ_STUCK_SENDING_SECONDS", "120")
    from producer.settings import reload_settings

    reload_settings()
    maintenance._settle_stuck_sending()
    assert settled == [old]
    assert younger not in settled


def test_stuck_sending_seconds_rejects_a_bound_shorter_than_a_send(
    store: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    from producer.settings import Settings

    monkeypatch.setenv("SMSQ_STUCK_SENDING_SECONDS", "5")
    with pytest.raises(ValidationError, match="stuck_sending_seconds"):
        Settings()


# -- the worker gives its claims up when it cannot finish ---------------------------
class Gateway:
    name = "keccel"
    duplicate_window_seconds = None

    def __init__(self, answer: Exception | None = None) -> None:
        self.answer = answer
        self.calls = 0

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        self.calls += 1
        if self.answer is not None:
            raise self.answer
        return [SendResult(m.ref, Status.SENT, f"gw-{m.ref[:6]}") for m in batch]


def queued_row() -> str:
    row = Message(to="243851234567", text="Your code is 4711", provider="keccel")
    with db.session() as s:
        s.add(row)
        s.commit()
    return row.id


def test_an_uncertain_send_releases_its_claim(
    store: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sending, "get_adapter", lambda name: Gateway(ValueError("surprise")))
    mid = queued_row()
    sending.send_messages([mid], lambda ids, countdown: None)
    row = load(mid)
    assert row.status == Status.SENDING.value  # SMSQ_UNCERTAIN_SEND=reconcile: beat asks
    assert row.claimed_by == liveness.RELEASED


def test_a_batch_that_breaks_off_releases_its_claims_and_raises(
    store: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = Gateway()
    monkeypatch.setattr(sending, "get_adapter", lambda name: gateway)

    def store_down(*args: object, **kwargs: object) -> None:
        raise OSError("disk I/O error")

    monkeypatch.setattr(sending, "_store_results", store_down)
    mid = queued_row()
    with pytest.raises(OSError, match="disk I/O error"):
        sending.send_messages([mid], lambda ids, countdown: None)
    assert gateway.calls == 1
    row = load(mid)
    assert row.status == Status.SENDING.value
    assert row.claimed_by == liveness.RELEASED


def test_a_finished_send_keeps_its_claimer_and_is_not_released(
    store: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sending, "get_adapter", lambda name: Gateway())
    mid = queued_row()
    sending.send_messages([mid], lambda ids, countdown: None)
    row = load(mid)
    assert row.status == Status.SENT.value
    assert row.claimed_by == liveness.process_id()
