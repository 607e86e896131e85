"""The message status vocabulary and the one state machine that moves it.

Statuses only move forward. A late, duplicate or out-of-order report is kept
as an event by the caller and leaves the status alone (see `can_move`).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    REJECTED = "rejected"
    FAILED = "failed"


TERMINAL: frozenset[Status] = frozenset(
    {Status.DELIVERED, Status.UNDELIVERED, Status.EXPIRED, Status.REJECTED, Status.FAILED}
)

# Rank of each status on the way forward; terminal ones share the top rank.
_RANK: dict[Status, int] = {
    Status.SCHEDULED: 0,
    Status.QUEUED: 1,
    Status.SENDING: 2,
    Status.SENT: 3,
    Status.DELIVERED: 4,
    Status.UNDELIVERED: 4,
    Status.EXPIRED: 4,
    Status.REJECTED: 4,
    Status.FAILED: 4,
}

# Moves that go "back" on purpose: a retryable failure returns a claimed row to
# the queue, and a scheduled message becomes queued when due.
_ALLOWED_BACKWARD: frozenset[tuple[Status, Status]] = frozenset({(Status.SENDING, Status.QUEUED)})


def is_terminal(status: Status | str) -> bool:
    return Status(status) in TERMINAL


def can_move(current: Status | str, new: Status | str) -> bool:
    """True when `current -> new` is a forward move (or the one allowed requeue)."""
    current, new = Status(current), Status(new)
    if current in TERMINAL or current == new:
        return False
    if (current, new) in _ALLOWED_BACKWARD:
        return True
    return _RANK[new] > _RANK[current]
