"""The suppression list (issue 15, point 4; issue 16, point 5): a message to a
suppressed number is stored `rejected` (error `suppressed...`) through the state
machine, fires its app callback, is never queued; a bulk send's other numbers go on."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from sqlmodel import select

from producer import (
    InvalidMessage,
    db,
    get_status,
    is_suppressed,
    send_bulk,
    send_sms,
    suppress,
    unsuppress,
)
from producer import api as producer_api
from producer.models import AppNotification, MessageEvent
from producer.suppressions import list_suppressions, suppressed_for
from tests.unit.conftest import isolate, restore

A, B = "243851234567", "243851234568"
CB = "https://app.example/cb"


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[list[list[str]]]:  # type: ignore[no-untyped-def]
    isolate(monkeypatch, tmp_path, SMSQ_KECCEL_TOKEN="k", SMSQ_RECIPIENT_LIMIT="off")
    calls: list[list[str]] = []
    monkeypatch.setattr(
        producer_api, "publish_send", lambda ids, countdown=None, **_: calls.append(ids)
    )
    yield calls
    restore(monkeypatch)


@pytest.fixture
def counted(published, monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:  # type: ignore[no-untyped-def]
    from worker import redis_client

    fake = fakeredis.FakeRedis()
    monkeypatch.setattr(redis_client, "shared", lambda: fake)
    return fake


def test_suppress_normalises_like_to_and_unsuppress_takes_it_off(published) -> None:  # type: ignore[no-untyped-def]
    entry = suppress("+243 851 234 567", reason="STOP by SMS")
    assert (entry.number, entry.scope, entry.reason) == (A, "all", "STOP by SMS")
    assert is_suppressed("00243851234567") and not is_suppressed(B)
    assert unsuppress(A) is True and unsuppress(A) is False
    assert not is_suppressed(A)


def test_a_message_to_a_suppressed_number_is_rejected_by_the_one_road(  # type: ignore[no-untyped-def]
    published, counted: fakeredis.FakeRedis
) -> None:
    from worker.ops import metrics

    suppress(A, reason="opted out on the website")
    mid = send_sms(A, "promo", callback_url=CB)
    st = get_status(mid)
    assert st is not None and st.status == "rejected"
    assert st.error == "suppressed: opted out on the website"
    assert published == []  # never queued, so never reaches a gateway
    with db.session() as s:
        [note] = s.exec(select(AppNotification).where(AppNotification.message_id == mid)).all()
        events = s.exec(select(MessageEvent).where(MessageEvent.message_id == mid)).all()
    assert '"status": "rejected"' in note.payload
    assert [(e.old_status, e.new_status) for e in events] == [
        (None, "queued"),
        ("queued", "rejected"),
    ]
    metrics.flush()
    assert int(counted.hget(metrics.HASH, "smsq_messages|keccel|rejected") or 0) == 1


def test_in_a_bulk_send_the_other_numbers_go_on(published) -> None:  # type: ignore[no-untyped-def]
    suppress(B)
    ids = send_bulk([A, B], "hi")
    statuses = [get_status(i).status for i in ids]  # type: ignore[union-attr]
    assert statuses == ["queued", "rejected"]
    assert get_status(ids[1]).error == "suppressed: the number opted out"  # type: ignore[union-attr]
    assert published == [[ids[0]]]


def test_a_bulk_scope_entry_refuses_bulk_only(published) -> None:  # type: ignore[no-untyped-def]
    """Issue 16, point 5: an opt-out of campaigns still lets codes and updates through."""
    suppress(A, scope="bulk")
    assert get_status(send_sms(A, "an order update")).status == "queued"  # type: ignore[union-attr]
    code = send_sms(A, "code 4711", priority="high")
    assert get_status(code).status == "queued"  # type: ignore[union-attr]
    [promo] = send_bulk([A], "sale today")  # bulk is send_bulk's default priority
    st = get_status(promo)
    assert st is not None and st.status == "rejected" and st.error.startswith("suppressed")
    [forced] = send_bulk([A], "sale again", priority="normal")
    assert get_status(forced).status == "queued"  # type: ignore[union-attr]
    assert promo not in [i for ids in published for i in ids]


def test_suppressed_for_by_scope_and_priority() -> None:
    assert suppressed_for("all", None) and suppressed_for("all", "high")
    assert suppressed_for("bulk", "bulk")
    assert not suppressed_for("bulk", None) and not suppressed_for("bulk", "normal")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: suppress("12"), "number"),
        (lambda: suppress(A, scope="some"), "scope"),
        (lambda: suppress(A, reason="x" * 201), "reason"),
        (lambda: suppress(A, reason="bad\x00"), "reason"),
        (lambda: list_suppressions(limit=0), "limit"),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(published, call, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidMessage) as refused:
        call()
    assert refused.value.field == field
    assert list_suppressions() == []


def test_list_pages_in_number_order(published) -> None:  # type: ignore[no-untyped-def]
    for n in (B, A, "380989361131"):
        suppress(n)
    first = list_suppressions(limit=2)
    assert [e.number for e in first] == [A, B]
    assert [e.number for e in list_suppressions(limit=2, after=first[-1].number)] == [
        "380989361131"
    ]
