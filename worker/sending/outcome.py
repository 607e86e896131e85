"""What one send task came to (counted per store write that landed), and how it asks
for a later try."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# requeue(ids, countdown[, claim_token]): queue a later send task for `ids`.
Requeue = Callable[..., None]


@dataclass
class SendOutcome:
    claimed: int = 0
    sent: int = 0
    rejected: int = 0
    failed: int = 0
    rerouted: int = 0
    waiting: int = 0
    expired: int = 0
    retry_in: float | None = None

    def add(self, other: SendOutcome) -> None:
        """Fold in the counts of one store write that landed (a retried write counts once)."""
        for name in ("claimed", "sent", "rejected", "failed", "rerouted", "waiting", "expired"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.retry_in is not None:
            self.retry_in = other.retry_in
