"""smsq producer: what web apps import to queue SMS.

from producer import send_sms, send_bulk, get_status, InvalidMessage, EnqueueError
"""

from producer.api import MessageStatus, get_status, send_bulk, send_sms
from producer.errors import EnqueueError, InvalidMessage, MessageRefused, StoreUnavailable
from producer.quotas import LimitsUnavailable
from producer.signing import verify_callback
from producer.status import Status
from producer.suppressions import is_suppressed, suppress, unsuppress

__all__ = [
    "EnqueueError",
    "InvalidMessage",
    "LimitsUnavailable",
    "MessageRefused",
    "MessageStatus",
    "Status",
    "StoreUnavailable",
    "get_status",
    "is_suppressed",
    "send_bulk",
    "send_sms",
    "suppress",
    "unsuppress",
    "verify_callback",
]
