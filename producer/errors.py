"""The exceptions a web app sees from the producer: bad input, or not taken now."""

from __future__ import annotations


class InvalidMessage(ValueError):
    """Bad input: the message names the field and the rule. Nothing was stored or queued."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class EnqueueError(RuntimeError):
    """The broker could not take the message (only with SMSQ_ENQUEUE_FAILURE=raise).

    Messages the broker did not take are not stored. In a bulk send, batches
    queued before the failure stay queued (`queued_ids`); calling again with
    the same idempotency key queues only the rest.
    """

    queued_ids: list[str]

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.queued_ids = []


class StoreUnavailable(EnqueueError):
    """The message store was unreachable (or locked past its busy timeout).

    Nothing was stored or queued, unless the connection broke while the insert
    was being committed: then the call may have stored the message. Retry with
    the same `idempotency_key` to be sure it is sent once. The text names the
    driver's error class only: never the database URL or the SQL parameters.
    """


class MessageRefused(Exception):
    """A limit refused the message (SMSQ_RECIPIENT_LIMIT): nothing was stored or queued.

    `reason` says which numbers and which limit; `retry_after` is the seconds until
    the first of them may pass again; `numbers` lists the refused numbers."""

    def __init__(self, reason: str, retry_after: int, numbers: list[str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.numbers = numbers
