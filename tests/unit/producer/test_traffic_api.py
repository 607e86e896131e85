"""Traffic classes through send_sms / send_bulk / get_status on a real SQLite store:
priority defaults and checks, ttl's expiry moment, quiet hours' hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from producer import InvalidMessage, get_status, send_bulk, send_sms
from producer.settings import get_settings, reload_settings
from tests.unit.producer import test_producer_api as base
from tests.unit.producer.test_producer_api import Recorder, rows

store = base.store  # the fixtures: a clean SQLite store, publishes recorded
published = base.published

KYIV = "380989361131"  # Europe/Kyiv only
KYIV_2 = "380671234567"


def test_send_sms_is_normal_and_send_bulk_is_bulk(published: Recorder) -> None:
    one = send_sms(KYIV, "code 1234")
    many = send_bulk([KYIV, KYIV_2], "sale")
    st = get_status(one)
    assert st is not None and st.priority == "normal"
    assert {get_status(m).priority for m in many} == {"bulk"}  # type: ignore[union-attr]
    high = send_sms(KYIV, "code 5678", priority="high")
    assert get_status(high).priority == "high"  # type: ignore[union-attr]
    assert get_status(high).to_dict()["priority"] == "high"  # type: ignore[union-attr]


@pytest.mark.parametrize("call", ["sms", "bulk"])
def test_a_bad_priority_stores_nothing(published: Recorder, call: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        if call == "sms":
            send_sms(KYIV, "x", priority="urgent")
        else:
            send_bulk([KYIV, KYIV_2], "x", priority="urgent")
    assert caught.value.field == "priority"
    assert "high, normal, bulk" in str(caught.value)
    assert rows() == [] and published.calls == []


def test_a_bad_ttl_stores_nothing(published: Recorder) -> None:
    with pytest.raises(InvalidMessage) as caught:
        send_sms(KYIV, "x", ttl=0)
    assert caught.value.field == "ttl"
    assert rows() == [] and published.calls == []


def test_ttl_counts_from_creation_or_send_at(published: Recorder) -> None:
    now = send_sms(KYIV, "code", ttl=300, priority="high")
    st = get_status(now)
    assert st is not None and st.ttl == 300
    assert st.expires_at == st.created_at + timedelta(seconds=300)
    later = datetime.now(UTC) + timedelta(hours=2)
    scheduled = get_status(send_sms(KYIV, "code", ttl=60, send_at=later))
    assert scheduled is not None and scheduled.expires_at == later + timedelta(seconds=60)
    assert get_status(send_sms(KYIV, "no ttl")).expires_at is None  # type: ignore[union-attr]


def _window_around_now(zone: str) -> tuple[str, datetime]:
    """A quiet window that holds now in `zone` (an hour each side) and its end, UTC."""
    local = datetime.now(ZoneInfo(zone)).replace(second=0, microsecond=0)
    start, end = local - timedelta(hours=1), local + timedelta(hours=1)
    return f"{start:%H:%M}-{end:%H:%M}", end.astimezone(UTC)


def test_bulk_inside_quiet_hours_is_scheduled_for_the_window_end(
    store: pytest.MonkeyPatch,
    published: Recorder,
) -> None:
    window, end = _window_around_now("Europe/Kyiv")
    store.setenv("SMSQ_QUIET_HOURS", window)
    reload_settings()
    ids = send_bulk([KYIV, KYIV_2], "night sale")
    for mid in ids:
        st = get_status(mid)
        assert st is not None and st.status == "scheduled"
        assert st.send_at is not None and abs(st.send_at - end) < timedelta(minutes=2)
        assert st.note is not None and st.note.startswith(f"quiet hours: {window}")
        assert "Europe/Kyiv" in st.note
    assert published.calls == []  # beat releases them at the window's end
    # A normal message is not held by default (SMSQ_QUIET_PRIORITIES=bulk) ...
    code = get_status(send_sms(KYIV, "code 1234"))
    assert code is not None and code.status == "queued"
    # ... nor is a bulk send that says quiet_hours=False.
    now = get_status(send_bulk([KYIV], "urgent notice", quiet_hours=False)[0])
    assert now is not None and now.status == "queued" and now.send_at is None


def test_quiet_priorities_choose_what_waits(
    store: pytest.MonkeyPatch,
    published: Recorder,
) -> None:
    window, _ = _window_around_now("Europe/Kyiv")
    store.setenv("SMSQ_QUIET_HOURS", window)
    store.setenv("SMSQ_QUIET_PRIORITIES", "normal,bulk")
    reload_settings()
    assert get_status(send_sms(KYIV, "reminder")).status == "scheduled"  # type: ignore[union-attr]
    assert get_status(send_sms(KYIV, "code", priority="high")).status == "queued"  # type: ignore[union-attr]


def test_a_send_at_inside_quiet_hours_moves_to_the_window_end(
    store: pytest.MonkeyPatch,
    published: Recorder,
) -> None:
    store.setenv("SMSQ_QUIET_HOURS", "21:00-08:00")
    reload_settings()
    kyiv = ZoneInfo("Europe/Kyiv")
    tomorrow = datetime.now(kyiv).date() + timedelta(days=2)
    at = datetime.combine(tomorrow, datetime.min.time(), tzinfo=kyiv).replace(hour=23)
    st = get_status(send_bulk([KYIV], "promo", send_at=at, ttl=600)[0])
    assert st is not None and st.status == "scheduled"
    wake = datetime.combine(tomorrow + timedelta(days=1), datetime.min.time(), tzinfo=kyiv)
    assert st.send_at == wake.replace(hour=8)
    # Its validity still counts from when it was due (the send_at asked for): a stale
    # message is never sent, quiet hours or not (beat expires it on release).
    assert st.expires_at == at + timedelta(seconds=600)


def test_a_bad_quiet_hours_setting_names_the_setting(store: pytest.MonkeyPatch) -> None:
    store.setenv("SMSQ_QUIET_HOURS", "late-early")
    reload_settings()
    with pytest.raises(ValueError, match="SMSQ_QUIET_HOURS"):
        get_settings()
