"""The dashboard's pure arithmetic: latency bins, percentiles, what each event counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.ui import stats
from worker.ui.stats import Event, MessageFacts

T0 = datetime(2026, 12, 1, 10, 2, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(-3, 0), (0, 0), (0.99, 0), (1, 1), (4.9, 3), (5, 4), (86399, 25), (86400, 26), (1e9, 26)],
)
def test_bins(seconds: float, expected: int) -> None:
    assert stats.bin_of(seconds) == expected


def test_percentiles_interpolate_inside_the_bin() -> None:
    hist = stats.empty_hist()
    hist[stats.bin_of(12)] = 100  # 100 latencies in [10, 15)
    assert stats.percentile(hist, 0.5) == pytest.approx(12.5)
    assert stats.percentile(hist, 0.95) == pytest.approx(14.75)
    hist[stats.bin_of(100)] = 100  # and 100 in [90, 120)
    assert stats.percentile(hist, 0.5) == pytest.approx(15.0)
    assert 90 <= stats.percentile(hist, 0.95) <= 120  # type: ignore[operator]
    assert stats.percentile(stats.empty_hist(), 0.5) is None
    top = stats.empty_hist()
    top[-1] = 3
    assert stats.percentile(top, 0.5) == 86400  # the open last bin: its lower edge


def test_percentile_is_within_one_bin_of_the_truth() -> None:
    import random

    rng = random.Random(3)
    values = sorted(rng.lognormvariate(3, 1) for _ in range(5000))
    hist = stats.empty_hist()
    for v in values:
        hist[stats.bin_of(v)] += 1
    for q in (0.5, 0.95):
        true = values[int(q * len(values)) - 1]
        low, high = stats.bin_bounds(stats.bin_of(true))
        assert low <= stats.percentile(hist, q) <= high  # type: ignore[operator]


def ev(i: int, kind: str, new: str | None, at: datetime, applied: bool = True, provider="keccel"):  # type: ignore[no-untyped-def]
    return Event(i, f"m{i % 3}", provider, kind, new, applied, at)


def test_contributions_count_applied_status_changes_per_bucket_and_width() -> None:
    facts = {"m0": MessageFacts(T0 - timedelta(seconds=20), 2), "m1": MessageFacts(T0, 1)}
    events = [
        ev(0, "status", "sent", T0),  # m0: 2 segments
        ev(3, "status", "delivered", T0 + timedelta(seconds=1)),  # m0: 21 s after due
        ev(4, "status", "delivered", T0, applied=False),  # a late report: counts nowhere
        ev(5, "status", "queued", T0),  # not a counted status
        ev(6, "attempt", None, T0),
        ev(7, "reconcile", None, T0),  # an uncertain send settled
        ev(8, "status", "failed", T0, provider=None),  # no gateway: nowhere
        ev(9, "status", "sent", T0 + timedelta(minutes=5)),  # next 5-minute bucket
    ]
    cells = stats.contributions(events, facts)
    fine = stats.floor(T0.timestamp(), 300)
    hour = stats.floor(T0.timestamp(), 3600)
    assert cells[(300, fine, "keccel", "sent")].count == 1
    assert cells[(300, fine, "keccel", "sent")].segments == 2
    assert cells[(300, fine + 300, "keccel", "sent")].count == 1
    assert cells[(3600, hour, "keccel", "sent")].count == 2
    assert cells[(3600, hour, "keccel", "sent")].segments == 4  # events 0 and 9: both m0
    delivered = cells[(3600, hour, "keccel", "delivered")]
    assert delivered.count == 1 and delivered.hist[stats.bin_of(21)] == 1
    assert cells[(300, fine, "keccel", "uncertain")].count == 1
    assert not [k for k in cells if k[3] in ("queued", "failed")]
    assert len(cells) == 7  # sent: 2 fine + 1 coarse; delivered, uncertain: 1 per width


def test_hist_text_round_trips_and_tolerates_junk() -> None:
    hist = stats.empty_hist()
    hist[4] = 7
    assert stats.load_hist(stats.dump_hist(hist)) == hist
    assert stats.dump_hist(stats.empty_hist()) is None
    assert stats.load_hist("not json") == stats.empty_hist()
    assert stats.load_hist(None) == stats.empty_hist()
