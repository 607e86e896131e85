"""Traffic classes: priority, validity (ttl) and quiet hours, as checks and pure functions.

A one-time code never waits behind a campaign (priority), a stale code is never sent
(ttl: `expires_at`), and nobody is woken at 3 a.m. (quiet hours: a message due inside
the window waits, `scheduled`, until it ends in the recipient's time zones).
Nothing here reads the store or the clock: callers pass `now`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as number_zones

from producer.errors import InvalidMessage

HIGH, NORMAL, BULK = "high", "normal", "bulk"
PRIORITIES: tuple[str, ...] = (HIGH, NORMAL, BULK)  # best first
RANK: dict[str, int] = {name: i for i, name in enumerate(PRIORITIES)}  # 0 is served first
MAX_TTL = 7 * 24 * 3600  # a week: longer than any retry deadline


def check_priority(value: object, field: str = "priority") -> str:
    """One of high, normal, bulk (any case), or InvalidMessage naming the three."""
    if isinstance(value, str) and value.strip().lower() in PRIORITIES:
        return value.strip().lower()
    raise InvalidMessage(field, f"{value!r} is not a priority; use one of: {', '.join(PRIORITIES)}")


def check_ttl(value: object, field: str = "ttl") -> int | None:
    """Seconds from when the message is due (None: no limit): a whole number, 1..MAX_TTL."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidMessage(field, "must be a whole number of seconds")
    if isinstance(value, float) and not value.is_integer():
        raise InvalidMessage(field, f"{value!r} must be a whole number of seconds")
    if not 1 <= value <= MAX_TTL:
        raise InvalidMessage(field, f"{int(value)} must be between 1 and {MAX_TTL} seconds")
    return int(value)


def check_quiet_hours(value: object, field: str = "quiet_hours") -> bool:
    if not isinstance(value, bool):
        raise InvalidMessage(field, "must be True or False")
    return value


def expires_at(due: datetime, ttl: int | None) -> datetime | None:
    """The moment a message due at `due` (creation or `send_at`) is stale."""
    return None if ttl is None else due + timedelta(seconds=ttl)


def expiry_error(ttl: int | None, expires: datetime | None, maybe_sent: bool = False) -> str:
    """The `error` of a message that ended `expired`: it was not sent within its ttl."""
    until = expires.isoformat(timespec="seconds") if expires else "?"
    lost = "; an earlier request's answer was lost: the gateway may have it" if maybe_sent else ""
    return f"expired: not sent within its validity (ttl {ttl} s, valid until {until}){lost}"


# ---- quiet hours -------------------------------------------------------------------

_CLOCK = r"(\d{1,2}):(\d{2})(?::(\d{2}))?"
_WINDOW = re.compile(rf"^\s*{_CLOCK}\s*-\s*{_CLOCK}\s*$")


@dataclass(frozen=True)
class QuietWindow:
    """Local wall-clock window, e.g. 21:00-08:00 (across midnight when start > end)."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{_clock(self.start)}-{_clock(self.end)}"


def _clock(at: time) -> str:
    return f"{at:%H:%M:%S}" if at.second else f"{at:%H:%M}"


def parse_window(value: str, name: str = "SMSQ_QUIET_HOURS") -> QuietWindow:
    """`HH:MM-HH:MM` (seconds optional: `HH:MM:SS`) into a window; ValueError naming
    the setting and the rule."""
    match = _WINDOW.match(value)
    if not match:
        raise ValueError(f"{name}: {value!r} is not HH:MM-HH:MM (e.g. 21:00-08:00)")
    h1, m1, s1, h2, m2, s2 = (int(g or 0) for g in match.groups())
    if h1 > 23 or h2 > 23 or max(m1, m2, s1, s2) > 59:
        raise ValueError(f"{name}: {value!r} has a time outside 00:00-23:59")
    start, end = time(h1, m1, s1), time(h2, m2, s2)
    if start == end:
        raise ValueError(f"{name}: {value!r} starts and ends at the same time")
    return QuietWindow(start, end)


def parse_priorities(value: str, name: str = "SMSQ_QUIET_PRIORITIES") -> frozenset[str]:
    names = {p.strip().lower() for p in value.split(",") if p.strip()}
    wrong = sorted(names - set(PRIORITIES))
    if wrong:
        raise ValueError(f"{name}: {', '.join(wrong)} not a priority ({', '.join(PRIORITIES)})")
    return frozenset(names)


@lru_cache(maxsize=4096)
def zones_of(number: str) -> tuple[str, ...]:
    """The IANA zones a number's prefix says it may be in ("" zones: unknown)."""
    try:
        parsed = phonenumbers.parse("+" + number.lstrip("+"), None)
    except phonenumbers.NumberParseException:
        return ()
    names = number_zones.time_zones_for_number(parsed)
    return tuple(z for z in names if z != number_zones.UNKNOWN_TIMEZONE)


def _zone_quiet_end(now: datetime, zone: ZoneInfo, window: QuietWindow) -> datetime | None:
    """When the window ends in `zone` if `now` is inside it there, else None (in UTC)."""
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    start, end = window.start, window.end
    if start < end:
        inside, end_day = start <= clock < end, local.date()
    else:  # across midnight: the evening part ends tomorrow, the morning part today
        inside = clock >= start or clock < end
        end_day = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not inside:
        return None
    # A wall-clock end in a DST gap (02:30 on spring-forward day) maps, through UTC, to
    # the moment the gap closes (03:30 there); fold=0 keeps an ambiguous end at its
    # first occurrence.
    return datetime.combine(end_day, end, tzinfo=zone).astimezone(UTC)


def quiet_until(number: str, now: datetime, window: QuietWindow) -> tuple[datetime, str] | None:
    """If `now` (aware) is inside the window in any of the number's zones: the moment
    it is over in all of them (the latest end, pushed on while another zone is still
    or again quiet), with the zones that held it. None: send now, or zones unknown."""
    zones = [z for z in (_zone(n) for n in zones_of(number)) if z is not None]
    held: list[str] = []
    at = now
    for _ in range(len(zones) + 2):  # each round can only add zones that were quiet
        ends = [(e, str(z)) for z in zones if (e := _zone_quiet_end(at, z, window)) is not None]
        if not ends:
            break
        held.extend(name for _e, name in ends if name not in held)
        at = max(e for e, _n in ends)
    if not held:
        return None
    return at, ", ".join(held)


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@dataclass(frozen=True)
class Hold:
    """A message held for quiet hours: released (`send_at`) at `until`; `note` says why."""

    until: datetime
    note: str


def quiet_hold(
    number: str,
    due: datetime,
    priority: str,
    window: QuietWindow | None,
    quiet_priorities: frozenset[str],
) -> Hold | None:
    """Whether a message of `priority` due at `due` must wait for the window's end."""
    if window is None or priority not in quiet_priorities:
        return None
    found = quiet_until(number, due, window)
    if found is None:
        return None
    until, zones = found
    names = zones.split(", ")
    if len(names) > 3:
        zones = f"{', '.join(names[:3])} and {len(names) - 3} more time zones"
    note = (
        f"quiet hours: {window} at the recipient ({zones}); "
        f"held until {until.astimezone(UTC).isoformat(timespec='minutes')}"
    )
    return Hold(until.astimezone(UTC), note)
