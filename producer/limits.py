"""What each gateway accepts, as data, so the producer can check it before queueing.

The producer must not import provider code; the adapters read their limits
from here so the two can never disagree.
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


LIMITS: dict[str, ProviderLimits] = {
    # Keccel documents no maximum; 5 concatenated GSM parts is what DRC networks carry.
    "keccel": ProviderLimits(
        max_text=765, max_segments=5, max_batch=1, max_status_batch=1, supports_push=True
    ),
    # SMSClub: 100 numbers per send, 100 ids per status request.
    "smsclub": ProviderLimits(max_text=1000, max_segments=10, max_batch=100, max_status_batch=100),
    # KING SMS PRO: sender at most 11 characters; text or flash.
    "kingsms": ProviderLimits(
        max_text=765,
        max_segments=5,
        max_batch=1,
        max_status_batch=1,
        supports_push=True,
        supports_flash=True,
    ),
    # 1601SMS: 160 characters, or up to 459 with type=long (3 parts of 153).
    "sms1601": ProviderLimits(
        max_text=459,
        max_segments=3,
        max_batch=100,
        max_status_batch=1,
        max_sender=11,
        supports_push=True,
    ),
}
