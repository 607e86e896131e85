"""Cancel a message not yet sent: in smsq's store, or in the gateway's outbox (1601SMS)."""

from __future__ import annotations

from producer import db
from producer.api import MessageStatus, cancel, gateway_schedules
from producer.errors import InvalidMessage
from producer.models import Message, utcnow
from producer.status import Status
from worker.gateways.registry import get_adapter
from worker.gateways.spec import CancelsScheduled
from worker.store.transitions import move


def cancel_message(
    message_id: str, *, source: str = "cli", note: str = "cancelled"
) -> MessageStatus:
    """Scheduled or queued in the store: cancelled there. Handed to a gateway outbox
    and not yet due: removed from the outbox first, then marked cancelled. `source`
    and `note` go into the status event (the dashboard names its user there)."""
    with db.reachable("nothing was cancelled"), db.session() as s:
        known = isinstance(message_id, str) and "\x00" not in message_id  # see api.cancel
        row = s.get(Message, message_id.strip()) if known else None
        in_outbox = (
            row is not None
            and row.status == Status.SENT.value
            and gateway_schedules(row.provider)
            and row.send_at is not None
            and row.send_at > utcnow()
            and row.provider_message_id is not None
        )
    if not in_outbox or row is None:
        return cancel(message_id, source=source, note=note)
    adapter = get_adapter(row.provider)
    if not isinstance(adapter, CancelsScheduled):
        raise InvalidMessage("id", f"{row.provider} cannot remove a message from its outbox")
    removed = adapter.cancel_scheduled(row.provider_message_id)
    if not removed:
        raise InvalidMessage(
            "id", f"{row.provider} has no outbox message {row.provider_message_id} any more"
        )
    with db.reachable(f"removed from the {row.provider} outbox, not yet marked"), db.session() as s:
        fresh = s.get(Message, row.id)
        assert fresh is not None
        move(
            s,
            fresh,
            Status.FAILED,
            source=source,
            note=note,
            error=f"cancelled: removed from the {row.provider} outbox",
        )
        s.commit()
        return MessageStatus.from_row(fresh)
