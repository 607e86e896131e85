"""The status state machine (producer.status), checked over every ordered pair."""

from __future__ import annotations

import pytest

from producer.status import TERMINAL, Status, can_move, is_terminal

# Written out by hand from the rules: statuses move forward only along
# scheduled -> queued -> sending -> sent -> {delivered, undelivered, expired,
# rejected, failed}; a terminal status never moves; same -> same is refused;
# the one move back allowed is sending -> queued (a retryable failure requeues).
#
# Rows: current status. Columns: new status, in this order:
COLUMNS = ["queued", "scheduled", "sending", "sent", "delivered", "undelivered", "expired",
           "rejected", "failed"]  # fmt: skip
TABLE = """
               queued scheduled sending sent delivered undelivered expired rejected failed
queued           -        -        Y     Y      Y          Y          Y       Y        Y
scheduled        Y        -        Y     Y      Y          Y          Y       Y        Y
sending          Y        -        -     Y      Y          Y          Y       Y        Y
sent             -        -        -     -      Y          Y          Y       Y        Y
delivered        -        -        -     -      -          -          -       -        -
undelivered      -        -        -     -      -          -          -       -        -
expired          -        -        -     -      -          -          -       -        -
rejected         -        -        -     -      -          -          -       -        -
failed           -        -        -     -      -          -          -       -        -
"""


def _expected() -> dict[tuple[str, str], bool]:
    lines = [line.split() for line in TABLE.strip().splitlines()]
    header, rows = lines[0], lines[1:]
    assert header == COLUMNS
    table: dict[tuple[str, str], bool] = {}
    for row in rows:
        current, marks = row[0], row[1:]
        assert len(marks) == len(COLUMNS)
        for new, mark in zip(COLUMNS, marks, strict=True):
            assert mark in {"Y", "-"}
            table[(current, new)] = mark == "Y"
    return table


EXPECTED = _expected()


def test_table_covers_every_status_pair() -> None:
    names = {s.value for s in Status}
    assert len(names) == 9
    assert set(COLUMNS) == names
    assert set(EXPECTED) == {(a, b) for a in names for b in names}


@pytest.mark.parametrize(("current", "new"), sorted(EXPECTED))
def test_can_move(current: str, new: str) -> None:
    assert can_move(Status(current), Status(new)) is EXPECTED[(current, new)]
    # plain strings are accepted too
    assert can_move(current, new) is EXPECTED[(current, new)]


def test_allowed_moves_count() -> None:
    # queued 7, scheduled 8, sending 7, sent 5, terminal 0
    assert sum(EXPECTED.values()) == 27


@pytest.mark.parametrize("status", list(Status))
def test_same_to_same_refused(status: Status) -> None:
    assert can_move(status, status) is False


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        ("queued", False),
        ("scheduled", False),
        ("sending", False),
        ("sent", False),
        ("delivered", True),
        ("undelivered", True),
        ("expired", True),
        ("rejected", True),
        ("failed", True),
    ],
)
def test_is_terminal(status: str, terminal: bool) -> None:
    assert is_terminal(status) is terminal
    assert is_terminal(Status(status)) is terminal
    assert (Status(status) in TERMINAL) is terminal


def test_unknown_status_raises() -> None:
    with pytest.raises(ValueError):
        can_move("queued", "lost")
    with pytest.raises(ValueError):
        is_terminal("lost")
