"""Traffic classes' pure parts (producer.traffic): the checks, validity, and the quiet
window as a function of (number, now, window): across midnight, DST, several zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from producer.errors import InvalidMessage
from producer.status import Status, can_move
from producer.traffic import (
    check_priority,
    check_ttl,
    expires_at,
    expiry_error,
    parse_priorities,
    parse_window,
    quiet_hold,
    quiet_until,
)

NEW_YORK = "12125551234"  # America/New_York only
IDAHO = "12085551234"  # America/Boise and America/Los_Angeles
ALASKA = "19075551234"  # America/Anchorage and America/Adak
MOSCOW_MOBILE = "79161234567"  # +7 916: sixteen zones, Europe/Bucharest (+2) to Kamchatka (+12)
KYIV = "380989361131"
NIGHT = parse_window("21:00-08:00")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# -- checks ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["high", "normal", "bulk", " HIGH "])
def test_the_three_priorities_are_accepted(value: str) -> None:
    assert check_priority(value) == value.strip().lower()


@pytest.mark.parametrize("value", ["urgent", "", None, 1, True])
def test_another_priority_names_the_field_and_the_three(value: object) -> None:
    with pytest.raises(InvalidMessage) as caught:
        check_priority(value)
    assert caught.value.field == "priority"
    assert "high, normal, bulk" in str(caught.value)


@pytest.mark.parametrize("value", [0, -5, 1.5, "60", True, 8 * 24 * 3600])
def test_a_ttl_must_be_whole_seconds_within_a_week(value: object) -> None:
    with pytest.raises(InvalidMessage) as caught:
        check_ttl(value)
    assert caught.value.field == "ttl"


def test_ttl_counts_from_when_the_message_is_due() -> None:
    assert check_ttl(None) is None and check_ttl(300) == 300 and check_ttl(60.0) == 60
    due = utc(2026, 5, 1, 12)
    assert expires_at(due, 300) == utc(2026, 5, 1, 12, 5)
    assert expires_at(due, None) is None
    assert "not sent within its validity" in expiry_error(300, utc(2026, 5, 1, 12, 5))


def test_the_state_machine_lets_a_waiting_or_claimed_message_expire() -> None:
    for waiting in (Status.SCHEDULED, Status.QUEUED, Status.SENDING):
        assert can_move(waiting, Status.EXPIRED)
    assert not can_move(Status.EXPIRED, Status.SENDING)
    assert not can_move(Status.EXPIRED, Status.QUEUED)


def test_a_window_may_name_seconds() -> None:
    window = parse_window("21:00-08:00:30")
    assert str(window) == "21:00-08:00:30"
    assert quiet_until(KYIV, utc(2026, 1, 16, 6, 0), window) is not None  # 08:00 in Kyiv
    assert quiet_until(KYIV, utc(2026, 1, 16, 6, 0, 30), window) is None


@pytest.mark.parametrize(
    "value", ["21:00", "25:00-08:00", "21:00-21:00", "9pm-8am", "21:00-08:00:60"]
)
def test_a_bad_window_names_the_setting(value: str) -> None:
    with pytest.raises(ValueError, match="SMSQ_QUIET_HOURS"):
        parse_window(value)


def test_quiet_priorities_must_be_priorities() -> None:
    assert parse_priorities("bulk, normal") == {"bulk", "normal"}
    with pytest.raises(ValueError, match="SMSQ_QUIET_PRIORITIES: urgent"):
        parse_priorities("bulk,urgent")


# -- one zone, across midnight --------------------------------------------------------
def test_the_evening_part_ends_the_next_morning() -> None:
    # 22:30 in New York (EST, -5) on 15 January: held until 08:00 on the 16th.
    assert quiet_until(NEW_YORK, utc(2026, 1, 16, 3, 30), NIGHT) == (
        datetime(2026, 1, 16, 8, 0, tzinfo=ZoneInfo("America/New_York")),
        "America/New_York",
    )


def test_the_morning_part_ends_the_same_morning() -> None:
    until, _ = quiet_until(NEW_YORK, utc(2026, 1, 16, 8, 0), NIGHT)  # type: ignore[misc]
    assert until == utc(2026, 1, 16, 13, 0)  # 03:00 local -> 08:00 local, same day


@pytest.mark.parametrize(
    "at",
    [utc(2026, 1, 16, 1, 59), utc(2026, 1, 16, 13, 0), utc(2026, 1, 16, 18, 0)],
    ids=["20:59", "08:00 (end is open)", "13:00"],
)
def test_outside_the_window_there_is_no_wait(at: datetime) -> None:
    assert quiet_until(NEW_YORK, at, NIGHT) is None


def test_a_window_within_one_day() -> None:
    lunch = parse_window("12:00-14:00")
    assert quiet_until(KYIV, utc(2026, 1, 16, 11, 0), lunch) == (  # 13:00 in Kyiv (+2)
        datetime(2026, 1, 16, 14, 0, tzinfo=ZoneInfo("Europe/Kyiv")),
        "Europe/Kyiv",
    )
    assert quiet_until(KYIV, utc(2026, 1, 16, 12, 0), lunch) is None  # 14:00 there


# -- DST ------------------------------------------------------------------------------
def test_the_night_clocks_spring_forward_ends_at_local_eight() -> None:
    # 8 March 2026: New York goes from EST (-5) to EDT (-4) at 02:00 local.
    until, _ = quiet_until(NEW_YORK, utc(2026, 3, 8, 5, 0), NIGHT)  # type: ignore[misc]
    assert until.astimezone(UTC) == utc(2026, 3, 8, 12, 0)  # 08:00 EDT, not 13:00


def test_the_night_clocks_fall_back_ends_at_local_eight() -> None:
    # 1 November 2026: EDT (-4) back to EST (-5) at 02:00 local; that night is longer.
    until, _ = quiet_until(NEW_YORK, utc(2026, 11, 1, 4, 0), NIGHT)  # type: ignore[misc]
    assert until.astimezone(UTC) == utc(2026, 11, 1, 13, 0)  # 08:00 EST


def test_an_end_inside_the_spring_forward_gap_is_just_after_it() -> None:
    # 02:30 does not exist in New York on 8 March 2026: the wait ends at the gap's
    # other side, and the recipient's clock then reads 03:30, out of the window.
    window = parse_window("21:00-02:30")
    until, _ = quiet_until(NEW_YORK, utc(2026, 3, 8, 6, 0), window)  # type: ignore[misc]
    assert until.astimezone(UTC) == utc(2026, 3, 8, 7, 30)
    assert until.astimezone(ZoneInfo("America/New_York")).hour == 3
    assert quiet_until(NEW_YORK, until, window) is None


# -- several zones --------------------------------------------------------------------
def test_a_number_with_two_zones_is_quiet_while_either_is() -> None:
    # 03:30 UTC: 20:30 in Boise (-7), 19:30 in Los Angeles (-8): quiet in neither.
    assert quiet_until(IDAHO, utc(2026, 1, 16, 3, 30), NIGHT) is None
    # 04:30 UTC: 21:30 in Boise, 20:30 in Los Angeles: Boise's night holds it.
    until, zones = quiet_until(IDAHO, utc(2026, 1, 16, 4, 30), NIGHT)  # type: ignore[misc]
    assert "America/Boise" in zones
    # ... until both are past 08:00: Los Angeles' 08:00 (16:00 UTC), the later end.
    assert until.astimezone(UTC) == utc(2026, 1, 16, 16, 0)


def test_alaska_waits_for_its_westernmost_zone() -> None:
    # Anchorage is -9, Adak -10 in January: 08:00 in Adak is 18:00 UTC.
    until, _ = quiet_until(ALASKA, utc(2026, 1, 16, 12, 0), NIGHT)  # type: ignore[misc]
    assert until.astimezone(UTC) == utc(2026, 1, 16, 18, 0)


def test_russia_is_quiet_somewhere_nearly_all_day() -> None:
    # Across sixteen zones from +2 to +12 an 11-hour night leaves 06:00-09:00 UTC, when
    # it is at least 08:00 in the west and before 21:00 in Kamchatka.
    for hour in (6, 7, 8):
        assert quiet_until(MOSCOW_MOBILE, utc(2026, 1, 16, hour, 30), NIGHT) is None
    until, _ = quiet_until(MOSCOW_MOBILE, utc(2026, 1, 16, 10, 0), NIGHT)  # type: ignore[misc]
    assert until.astimezone(UTC) == utc(2026, 1, 17, 6, 0)  # 08:00 at +2, the last to wake
    until, _ = quiet_until(MOSCOW_MOBILE, utc(2026, 1, 16, 23, 0), NIGHT)  # type: ignore[misc]
    assert until.astimezone(UTC) == utc(2026, 1, 17, 6, 0)


def test_every_end_is_a_moment_no_zone_of_the_number_is_quiet() -> None:
    start = utc(2026, 3, 1)
    for number in (NEW_YORK, IDAHO, ALASKA, MOSCOW_MOBILE, KYIV):
        for step in range(0, 24 * 40, 7):  # every 7 hours over 40 days, across DST
            now = start + timedelta(hours=step, minutes=13)
            found = quiet_until(number, now, NIGHT)
            if found is not None:
                assert found[0] > now
                assert quiet_until(number, found[0], NIGHT) is None, (number, now)


def test_a_number_without_a_known_zone_is_not_held() -> None:
    assert quiet_until("1800555", utc(2026, 1, 16, 3, 0), NIGHT) is None  # Etc/Unknown


def test_quiet_hold_applies_only_to_the_listed_priorities() -> None:
    night = utc(2026, 1, 16, 3, 30)  # 22:30 in New York
    assert quiet_hold(NEW_YORK, night, "high", NIGHT, frozenset({"bulk"})) is None
    assert quiet_hold(NEW_YORK, night, "bulk", None, frozenset({"bulk"})) is None
    hold = quiet_hold(NEW_YORK, night, "bulk", NIGHT, frozenset({"bulk"}))
    assert hold is not None and hold.until == utc(2026, 1, 16, 13, 0)
    assert hold.note.startswith("quiet hours: 21:00-08:00 at the recipient (America/New_York)")
    assert "held until 2026-01-16T13:00" in hold.note
