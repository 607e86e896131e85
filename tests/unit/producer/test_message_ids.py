"""Message ids: 32 hex digits in UUIDv7's layout, ordered by creation time (so new rows
land at the right edge of the id indexes), random enough to be unguessable."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from producer.models import new_id


def test_an_id_is_32_hex_digits_in_uuid7_layout() -> None:
    made = new_id()
    assert len(made) == 32 and int(made, 16) >= 0
    parsed = uuid.UUID(made)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_ids_sort_by_creation_time_to_the_millisecond() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    made = [new_id(start + timedelta(milliseconds=n)) for n in range(0, 5000, 7)]
    assert made == sorted(made)
    assert new_id(start)[:12] == f"{int(start.timestamp() * 1000):012x}"


def test_ids_made_in_the_same_millisecond_differ_in_their_74_random_bits() -> None:
    at = datetime(2026, 6, 1, tzinfo=UTC)
    made = {new_id(at) for _ in range(10_000)}
    assert len(made) == 10_000
    assert len({m[:12] for m in made}) == 1  # the time part is the same
