"""The producer API that web apps call: validate, store the row, queue the task.

The row is written before the task is queued, so a broker outage loses
nothing: the row waits in `queued` and beat's sweep queues it again
(`next_attempt_at` is when the sweep may look at it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from producer import db, quotas, suppressions
from producer.enqueue import publish_send
from producer.errors import EnqueueError, InvalidMessage, MessageRefused
from producer.limits import limits_for
from producer.models import Message, MessageEvent, new_id, utcnow
from producer.routing import choose_providers
from producer.settings import get_settings, provider_settings
from producer.status import Status
from producer.traffic import (
    BULK,
    NORMAL,
    Hold,
    check_priority,
    check_quiet_hours,
    check_ttl,
    expires_at,
    parse_priorities,
    parse_window,
    quiet_hold,
)
from producer.validation import (
    MAX_IDEMPOTENCY_KEY,
    check_callback_url,
    check_destination,
    check_idempotency_key,
    check_owner,
    check_provider,
    check_send_at,
    check_sender,
    check_text,
)

log = logging.getLogger("smsq.producer")
MAX_BULK = 100_000
# A bulk send stores `<key>:<index>` for each number, within MAX_IDEMPOTENCY_KEY: the
# key itself leaves room for the longest index, so its limit does not depend on how
# many numbers a call has (and the HTTP API's document can state it).
MAX_BULK_IDEMPOTENCY_KEY = MAX_IDEMPOTENCY_KEY - len(f":{MAX_BULK - 1}")


@dataclass(frozen=True)
class MessageStatus:
    """What `get_status` returns: a snapshot of one message."""

    id: str
    status: str
    owner: str | None  # the API key name that made it over HTTP; None for Python calls
    provider: str
    provider_message_id: str | None
    to: str
    text: str
    sender: str | None
    encoding: str
    segments: int
    attempts: int
    error: str | None
    note: str | None
    created_at: datetime
    updated_at: datetime
    send_at: datetime | None
    sent_at: datetime | None
    priority: str = NORMAL
    ttl: int | None = None
    expires_at: datetime | None = None
    # Set once retention (SMSQ_RETENTION_DAYS) masked `to` and removed `text`.
    redacted_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Message) -> MessageStatus:
        return cls(
            id=row.id,
            status=row.status,
            owner=row.owner or None,
            provider=row.provider,
            provider_message_id=row.provider_message_id,
            to=row.to,
            text=row.text,
            sender=row.sender,
            encoding=row.encoding,
            segments=row.segments,
            attempts=row.attempts,
            error=row.error,
            note=row.note,
            created_at=row.created_at,
            updated_at=row.updated_at,
            send_at=row.send_at,
            sent_at=row.sent_at,
            priority=row.priority,
            ttl=row.ttl,
            expires_at=row.expires_at,
            redacted_at=row.redacted_at,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()
        }


@dataclass(frozen=True)
class Traffic:
    """A call's traffic class, checked: priority, validity, whether quiet hours apply."""

    priority: str
    ttl: int | None
    quiet_hours: bool

    @classmethod
    def check(cls, priority: object, ttl: object, quiet_hours: object) -> Traffic:
        return cls(check_priority(priority), check_ttl(ttl), check_quiet_hours(quiet_hours))


@dataclass(slots=True)
class NewMessage:
    """The columns of a message about to be stored. A plain record, not an ORM object:
    building and inserting 10,000 of them (one `send_bulk`) is a list of tuples and one
    executemany, where a `Message` each cost a pydantic validation and an ORM flush
    (about 60% of the call in a profile)."""

    id: str
    owner: str
    idempotency_key: str | None
    to: str
    text: str
    sender: str | None
    provider: str
    fallbacks: str
    encoding: str
    segments: int
    flash: bool
    status: str
    callback_url: str | None
    send_at: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    priority: str
    ttl: int | None
    expires_at: datetime | None
    note: str | None

    def columns(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


def _build_row(
    number: str,
    text: str,
    provider: str | None,
    sender: object,
    idempotency_key: str | None,
    send_at: datetime | None,
    callback_url: str | None,
    flash: bool,
    traffic: Traffic,
    owner: str = "",
) -> NewMessage:
    chain = choose_providers(number, provider)
    chosen = chain[0]
    info = check_text(text, chosen)
    checked_sender = check_sender(sender, chosen)
    if flash and not limits_for(chosen).supports_flash:
        raise InvalidMessage("flash", f"{chosen} cannot send flash messages")
    now = utcnow()
    due = send_at or now
    hold = _quiet_hold(number, due, traffic)
    if hold is not None:  # released by beat at the window's end, like any scheduled send
        send_at = hold.until
    held_by_gateway = send_at is not None and hold is None and gateway_schedules(chosen)
    return NewMessage(
        id=new_id(),
        owner=owner,
        idempotency_key=idempotency_key,
        to=number,
        text=text,
        sender=checked_sender,
        provider=chosen,
        fallbacks=",".join(chain[1:]),
        encoding=info.encoding,
        segments=info.segments,
        flash=bool(flash),
        status=(Status.SCHEDULED if send_at and not held_by_gateway else Status.QUEUED).value,
        callback_url=callback_url,
        send_at=send_at,
        next_attempt_at=None
        if send_at and not held_by_gateway
        else now + timedelta(seconds=get_settings().sweep_after_seconds),
        created_at=now,
        updated_at=now,
        priority=traffic.priority,
        ttl=traffic.ttl,
        expires_at=expires_at(due, traffic.ttl),
        note=hold.note if hold is not None else None,
    )


def _quiet_hold(number: str, due: datetime, traffic: Traffic) -> Hold | None:
    """SMSQ_QUIET_HOURS for SMSQ_QUIET_PRIORITIES, unless the call said quiet_hours=False."""
    settings = get_settings()
    if not traffic.quiet_hours or not settings.quiet_hours:
        return None
    window = parse_window(settings.quiet_hours)
    return quiet_hold(
        number, due, traffic.priority, window, parse_priorities(settings.quiet_priorities)
    )


def gateway_schedules(provider: str) -> bool:
    """True when `provider` keeps scheduled messages in its own outbox (its spec says
    which setting turns that on: 1601SMS's SMSQ_SMS1601_OUTBOX_SCHEDULING)."""
    from worker.gateways.registry import spec

    return spec(provider).schedules_in_outbox(provider_settings(provider))


def _check_flash(flash: object) -> bool:
    if not isinstance(flash, bool):
        raise InvalidMessage("flash", "must be True or False")
    return flash


def send_sms(
    to: str,
    text: str,
    provider: str | None = None,
    sender: str | None = None,
    idempotency_key: str | None = None,
    send_at: datetime | str | None = None,
    callback_url: str | None = None,
    flash: bool = False,
    priority: str = NORMAL,
    ttl: int | None = None,
    quiet_hours: bool = True,
    *,
    owner: str | None = None,
    strict_limits: bool = False,
) -> str:
    """Queue one SMS; return its id. Raises InvalidMessage for bad input and
    MessageRefused past SMSQ_RECIPIENT_LIMIT (nothing stored either way).

    `priority` high|normal|bulk; `ttl`: seconds from when it is due (now or `send_at`)
    after which it is `expired`, never sent; `quiet_hours=False` ignores SMSQ_QUIET_HOURS.
    `owner`: whose message it is (the web process passes the API key's name);
    idempotency keys are per owner. `strict_limits`: when the limit counters
    (Redis) are unreachable, raise LimitsUnavailable (the web process does)
    instead of sending uncounted."""
    who = check_owner(owner)
    number = check_destination(to, "to")
    name = check_provider(provider) if provider is not None else None
    key = check_idempotency_key(idempotency_key)
    when = check_send_at(send_at)
    url = check_callback_url(callback_url)
    traffic = Traffic.check(priority, ttl, quiet_hours)
    row = _build_row(number, text, name, sender, key, when, url, _check_flash(flash), traffic, who)
    return _store_and_queue([row], key, who, strict_limits)[0]


def send_bulk(
    to: Sequence[str],
    text: str,
    provider: str | None = None,
    sender: str | None = None,
    idempotency_key: str | None = None,
    send_at: datetime | str | None = None,
    callback_url: str | None = None,
    flash: bool = False,
    priority: str = BULK,
    ttl: int | None = None,
    quiet_hours: bool = True,
    *,
    owner: str | None = None,
    strict_limits: bool = False,
) -> list[str]:
    """Queue one text to many numbers; every number is checked before anything is stored.

    With an idempotency key, message i gets `<key>:<i>`, so the same call twice
    sends once. `owner` and `strict_limits` as for `send_sms`; one number past
    SMSQ_RECIPIENT_LIMIT refuses the whole call (MessageRefused names it).
    """
    who = check_owner(owner)
    if isinstance(to, str | bytes) or not isinstance(to, Iterable):
        raise InvalidMessage("to", "must be a list of phone numbers")
    numbers_in = list(to)
    if not numbers_in:
        raise InvalidMessage("to", "is an empty list")
    if len(numbers_in) > MAX_BULK:
        raise InvalidMessage("to", f"has {len(numbers_in)} numbers; at most {MAX_BULK} per call")
    numbers = [check_destination(n, f"to[{i}]") for i, n in enumerate(numbers_in)]
    name = check_provider(provider) if provider is not None else None
    key = check_idempotency_key(idempotency_key)
    if key and len(key) > MAX_BULK_IDEMPOTENCY_KEY:
        raise InvalidMessage(
            "idempotency_key",
            f"is longer than {MAX_BULK_IDEMPOTENCY_KEY} characters, the limit of a bulk send "
            f"(each number stores '<key>:<index>' within {MAX_IDEMPOTENCY_KEY})",
        )
    when = check_send_at(send_at)
    url = check_callback_url(callback_url)
    is_flash = _check_flash(flash)
    traffic = Traffic.check(priority, ttl, quiet_hours)
    rows = [
        _build_row(
            n, text, name, sender, f"{key}:{i}" if key else None, when, url, is_flash, traffic, who
        )
        for i, n in enumerate(numbers)
    ]
    return _store_and_queue(rows, key, who, strict_limits)


def _store_and_queue(
    rows: list[NewMessage], key: str | None, owner: str = "", strict_limits: bool = False
) -> list[str]:
    """Insert the rows and queue them. With idempotency keys, rows whose key is already
    stored (for this owner) are not inserted again: their stored ids are returned in
    their place (and they do not count against the recipient limit again)."""
    with db.reachable("nothing was stored or queued"):
        existing = _existing_ids(rows, owner) if key is not None else {}
        fresh = [r for r in rows if r.idempotency_key not in existing]
        priority = fresh[0].priority if fresh else None  # one call, one priority
        with db.get_engine().connect() as connection:
            refused = suppressions.blocked(connection, [r.to for r in fresh], priority)
        _count_recipients([r for r in fresh if r.to not in refused], strict_limits)
        try:
            _insert(fresh, refused)
        except IntegrityError:
            if key is None:
                raise
            # Another caller inserted some of the same keys in between: take theirs.
            existing = _existing_ids(rows, owner)
            fresh = [r for r in rows if r.idempotency_key not in existing]
            _insert(fresh, refused)
    _queue([r for r in fresh if r.status == Status.QUEUED], total=len(rows))
    return [existing.get(r.idempotency_key, r.id) if r.idempotency_key else r.id for r in rows]


def _count_recipients(rows: list[NewMessage], strict: bool) -> None:
    """SMSQ_RECIPIENT_LIMIT: MessageRefused naming every number past it, before anything
    is stored. Counters unreachable: LimitsUnavailable when `strict`, else uncounted
    (a Python caller keeps sending through a broker outage, as its rows wait for the
    sweep) with a warning."""
    items = quotas.parse_limit(get_settings().recipient_limit, "SMSQ_RECIPIENT_LIMIT")
    if not items or not rows:
        return
    try:
        refused = quotas.take_numbers(items, [r.to for r in rows])
    except quotas.LimitsUnavailable as exc:
        if strict:
            raise
        log.warning("recipient limit not counted: %s", exc)
        return
    if refused:
        raise refusal_of(refused)


def refusal_of(refused: dict[str, quotas.Refusal]) -> MessageRefused:
    """One MessageRefused for every refused number (the first few named in the reason)."""
    numbers = sorted(refused)
    named = ", ".join(numbers[:5]) + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")
    limit = refused[numbers[0]].limit
    wait = min(r.retry_after for r in refused.values())
    return MessageRefused(
        f"to: {named} reached SMSQ_RECIPIENT_LIMIT ({limit} per number); nothing was "
        f"stored or queued; retry after {wait} s",
        retry_after=wait,
        numbers=numbers,
    )


# Built once (building a statement costs more than a one-row insert on SQLite).
_INSERT_MESSAGES = insert(Message.__table__)  # type: ignore[attr-defined]
_INSERT_EVENTS = insert(MessageEvent.__table__)  # type: ignore[attr-defined]


def _insert(rows: list[NewMessage], suppressed: dict[str, str] | None = None) -> None:
    """Insert the rows with their first event (one executemany each); rows to a
    suppressed number move on to `rejected` in the same transaction, by the state
    machine's one road (event, metric, app callback), so none is ever queued."""
    if not rows:
        return
    from worker.store.transitions import load_rows, move

    now = utcnow()
    events = [
        {
            "message_id": row.id,
            "provider": row.provider,
            "source": "producer",
            "kind": "status",
            "new_status": row.status,
            "applied": True,
            "note": f"{row.encoding}, {row.segments} part(s)",
            "created_at": now,
        }
        for row in rows
    ]
    with db.session() as s:
        connection = s.connection()  # Core: no ORM bookkeeping for rows never loaded
        connection.execute(_INSERT_MESSAGES, [row.columns() for row in rows])
        connection.execute(_INSERT_EVENTS, events)
        refused = [row.id for row in rows if suppressed and row.to in suppressed]
        for stored in load_rows(s, refused) if refused else []:
            error = (suppressed or {})[stored.to]
            move(s, stored, Status.REJECTED, source="producer", note=error, error=error,
                 next_attempt_at=None)  # fmt: skip
        for row in rows:
            if row.id in refused:
                row.status = Status.REJECTED.value
        s.commit()


def _existing_ids(rows: list[NewMessage], owner: str) -> dict[str | None, str]:
    """Ids already stored under these rows' idempotency keys, for this owner."""
    keys = [r.idempotency_key for r in rows if r.idempotency_key]
    found: dict[str | None, str] = {}
    with db.session() as s:
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            query = select(Message).where(
                Message.owner == owner,
                Message.idempotency_key.in_(chunk),  # type: ignore[union-attr]
            )
            found.update({m.idempotency_key: m.id for m in s.exec(query)})
    return found


def _queue(rows: list[NewMessage], total: int) -> None:
    """One task per provider batch. On broker failure keep the rows for the sweep, or raise."""
    batches: dict[tuple[str, str, str, str | None], list[str]] = {}
    for row in rows:
        batches.setdefault((row.provider, row.priority, row.text, row.sender), []).append(row.id)
    failed: list[str] = []
    error: Exception | None = None
    for (provider, priority, _text, _sender), ids in batches.items():
        size = limits_for(provider).max_batch
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            try:
                publish_send(chunk, priority=priority)
            except Exception as exc:  # kombu raises many types for a down broker
                failed.extend(chunk)
                error = exc
    if not failed:
        return
    settings = get_settings()
    with db.session() as s:
        for row in s.exec(select(Message).where(Message.id.in_(failed))):  # type: ignore[union-attr]
            if settings.enqueue_failure == "raise":
                s.delete(row)
            else:
                row.next_attempt_at = utcnow()  # the next sweep queues it
                s.add(row)
                s.add(
                    MessageEvent(
                        message_id=row.id,
                        provider=row.provider,
                        source="producer",
                        kind="retry",
                        note="broker unreachable at enqueue; kept for the sweep",
                    )
                )
        if settings.enqueue_failure == "raise":
            for event in s.exec(select(MessageEvent).where(MessageEvent.message_id.in_(failed))):  # type: ignore[union-attr]
                s.delete(event)
        s.commit()
    log.warning(
        "broker unreachable at enqueue (%s): %d message(s)", type(error).__name__, len(failed)
    )
    if settings.enqueue_failure == "raise":
        queued = [r.id for r in rows if r.id not in set(failed)]
        problem = EnqueueError(
            f"the broker did not take {len(failed)} of {total} message(s) "
            f"({type(error).__name__}); those were not stored"
            + (f"; {len(queued)} were queued and will be sent" if queued else "")
        )
        problem.queued_ids = queued  # type: ignore[attr-defined]
        raise problem from error


CANCELLABLE = frozenset({Status.SCHEDULED, Status.QUEUED})


def cancel(message_id: str, *, source: str = "producer", note: str = "cancelled") -> MessageStatus:
    """Cancel a message not yet sent (scheduled, or queued and not claimed): it becomes
    `failed` with the error "cancelled". A message already claimed or sent cannot be.

    The change takes the one road of every status change (`worker.store.transitions`):
    its event, its metric and the app's status callback, like any other."""
    from worker.store.transitions import move

    if not isinstance(message_id, str) or not message_id.strip():
        raise InvalidMessage("id", "must be a message id string")
    if "\x00" in message_id:  # no id has one, and PostgreSQL cannot even compare it
        raise InvalidMessage("id", f"no message {message_id!r}")
    with db.reachable("nothing was cancelled"), db.session() as s:
        row = s.get(Message, message_id.strip())
        if row is None:
            raise InvalidMessage("id", f"no message {message_id!r}")
        moved = move(
            s,
            row,
            Status.FAILED,
            source=source,
            note=note,
            only_from=CANCELLABLE,
            error="cancelled",
            next_attempt_at=None,
        )
        if not moved:
            raise InvalidMessage(
                "id", f"message is {row.status}: only scheduled or queued messages can be cancelled"
            )
        s.commit()
        return MessageStatus.from_row(row)


def get_status(message_id: str) -> MessageStatus | None:
    """The current status of a message, or None when the id is unknown."""
    if not isinstance(message_id, str) or not message_id.strip():
        raise InvalidMessage("id", "must be a message id string")
    if "\x00" in message_id:  # no id has one, and PostgreSQL cannot even compare it
        return None
    with db.reachable("the status was not read"), db.session() as s:
        row = s.get(Message, message_id.strip())
        return MessageStatus.from_row(row) if row else None


def message_events(message_id: str) -> list[dict[str, object]]:
    """The event history of a message (oldest first), for `smsq status` and the web API."""
    with db.reachable("the events were not read"), db.session() as s:
        events = s.exec(
            select(MessageEvent)
            .where(MessageEvent.message_id == message_id)
            .order_by(MessageEvent.id)  # type: ignore[arg-type]
        ).all()
    return [
        {
            "at": e.created_at.isoformat(),
            "source": e.source,
            "kind": e.kind,
            "old_status": e.old_status,
            "new_status": e.new_status,
            "applied": e.applied,
            "note": e.note,
            "raw": json.loads(e.raw) if e.raw else None,
        }
        for e in events
    ]
