"""What a gateway accepts, as data, so the producer can check it before queueing.

Each gateway declares its limits in its own spec (`worker.gateways.<name>`); the
producer reads them through the registry, which imports no adapter code, and
the adapters read the same object, so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProviderLimits:
    max_text: int  # characters of one message (long messages included)
    max_segments: int  # parts of one message
    max_batch: int  # recipients per send request
    max_status_batch: int  # ids per status request
    max_sender: int = 11  # characters of an alphanumeric sender
    supports_push: bool = False
    supports_flash: bool = False


def limits_for(provider: str) -> ProviderLimits:
    """The limits `provider` declares; KeyError naming the known ones otherwise."""
    from worker.gateways.registry import spec

    return spec(provider).limits
