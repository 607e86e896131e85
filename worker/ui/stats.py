"""The dashboard's arithmetic, pure: buckets, latency bins, percentiles, what an event counts.

The roll-up (`worker.ui.rollup`) turns events into `Contribution`s with these
functions and adds them to `ui_stats`; the pages (`worker.ui.queries`) merge
buckets back with `merge_hist` and read p50/p95 with `percentile`. No I/O here,
so it is table-tested.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

# Bucket widths in seconds: 5 minutes (the last hour) and 1 hour (the day, the week).
FINE, COARSE = 300, 3600
WIDTHS = (FINE, COARSE)
# How long each width is kept (seconds): the pages never look further back.
KEEP = {FINE: 2 * 86400, COARSE: 90 * 86400}

# Upper edges (seconds) of the latency bins of "send_sms to delivered"; a last bin
# holds everything from the final edge up. About 1.5x apart: p50/p95 read from
# them are within one bin's width of the true value.
EDGES: tuple[float, ...] = (
    1, 2, 3, 5, 7, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 450, 600, 900,
    1200, 1800, 2700, 3600, 7200, 14400, 28800, 86400,
)  # fmt: skip
BINS = len(EDGES) + 1

FINAL = ("delivered", "undelivered", "expired", "failed", "rejected")
COUNTED = ("sent", *FINAL)
UNCERTAIN = "uncertain"  # a settlement of an uncertain send (a `reconcile` event)
ALL = (*COUNTED, UNCERTAIN)


def floor(ts: float, width: int) -> int:
    """The start (Unix seconds) of the bucket of `width` seconds holding `ts`."""
    return int(ts // width * width)


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def bin_of(seconds: float) -> int:
    """The latency bin of `seconds` (negative clock skew counts as 0)."""
    for i, edge in enumerate(EDGES):
        if seconds < edge:
            return i
    return len(EDGES)


def bin_bounds(i: int) -> tuple[float, float]:
    low = 0.0 if i == 0 else float(EDGES[i - 1])
    high = float(EDGES[i]) if i < len(EDGES) else math.inf
    return low, high


def percentile(hist: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1) of the latencies in `hist`, interpolated inside its bin;
    None when it is empty. The open last bin answers its lower edge."""
    total = sum(hist)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(hist):
        if n and seen + n >= rank:
            low, high = bin_bounds(i)
            if math.isinf(high):
                return low
            return low + (high - low) * max(0.0, rank - seen) / n
        seen += n
    return bin_bounds(len(hist) - 1)[0]  # pragma: no cover - rank <= total always ends above


def empty_hist() -> list[int]:
    return [0] * BINS


def merge_hist(into: list[int], other: Sequence[int]) -> list[int]:
    for i, n in enumerate(other[:BINS]):
        into[i] += int(n)
    return into


def load_hist(text: str | None) -> list[int]:
    if not text:
        return empty_hist()
    try:
        values = json.loads(text)
    except ValueError:
        return empty_hist()
    return merge_hist(empty_hist(), [int(v) for v in values if isinstance(v, int | float)])


def dump_hist(hist: Sequence[int]) -> str | None:
    return json.dumps(list(hist)) if any(hist) else None


@dataclass(frozen=True)
class Event:
    """The part of a `message_events` row the roll-up reads."""

    id: int
    message_id: str | None
    provider: str | None
    kind: str
    new_status: str | None
    applied: bool
    created_at: datetime


@dataclass(frozen=True)
class MessageFacts:
    """The part of a message the roll-up needs: when it became due, its segments."""

    due_at: datetime
    segments: int


def counted_as(event: Event) -> str | None:
    """Which `ui_stats` status an event adds one to, or None (it counts nowhere)."""
    if not event.provider:
        return None
    if event.kind == "reconcile":
        return UNCERTAIN
    if event.kind == "status" and event.applied and event.new_status in COUNTED:
        return event.new_status
    return None


@dataclass
class Cell:
    count: int = 0
    segments: int = 0
    hist: list[int] = field(default_factory=empty_hist)

    def add(self, other: Cell) -> Cell:
        self.count += other.count
        self.segments += other.segments
        merge_hist(self.hist, other.hist)
        return self


Key = tuple[int, int, str, str]  # width, bucket, provider, status


def contributions(events: Iterable[Event], facts: dict[str, MessageFacts]) -> dict[Key, Cell]:
    """What a batch of events adds to each (width, bucket, provider, status) cell.

    `sent` adds the message's segments (the burn rate's fallback); `delivered`
    adds its latency from when it became due (send_sms, or its send_at)."""
    cells: dict[Key, Cell] = {}
    for event in events:
        status = counted_as(event)
        if status is None:
            continue
        at = as_utc(event.created_at)
        known = facts.get(event.message_id or "")
        one = Cell(count=1)
        if status == "sent" and known is not None:
            one.segments = known.segments
        if status == "delivered" and known is not None:
            one.hist[bin_of((at - as_utc(known.due_at)).total_seconds())] += 1
        for width in WIDTHS:
            key = (width, floor(at.timestamp(), width), str(event.provider), status)
            cells.setdefault(key, Cell()).add(one)
    return cells


def needs_facts(event: Event) -> bool:
    return counted_as(event) in ("sent", "delivered") and bool(event.message_id)
