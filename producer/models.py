"""The message store's schema (SQLModel). `worker/` imports it; the producer owns it."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from sqlalchemy import Column, ColumnElement, Index, Text, UniqueConstraint, literal_column, text
from sqlmodel import Field, SQLModel

from producer.status import TERMINAL, Status


def utcnow() -> datetime:
    """Aware UTC: the store keeps every time in UTC (SQLModel's UTCDateTime)."""
    return datetime.now(UTC)


def new_id(at: datetime | None = None) -> str:
    """A message id: 32 hex digits, ordered by creation time (UUIDv7's layout, RFC 9562:
    48 bits of Unix milliseconds, then 74 random bits), not uuid4's random order. New
    rows' entries then land at the right edge of every index on an id (the messages'
    key, the events' `message_id`), so a year of history does not spread each insert
    and claim over the whole index. 74 random bits keep an id unguessable."""
    millis = int((at or utcnow()).timestamp() * 1000) & (1 << 48) - 1
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits; 6 become version and variant
    value = millis << 80 | rand
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 9562 variant
    return f"{value:032x}"


OWNER_MAX = 100

# The statuses a message is still moving through; the others (TERMINAL) are final.
ACTIVE: tuple[str, ...] = ("queued", "scheduled", "sending", "sent")
FINAL: tuple[str, ...] = tuple(s.value for s in Status if s in TERMINAL)


def status_sql(statuses: tuple[str, ...]) -> str:
    """`status = 'x'` or `status IN ('x', 'y')`, the values written into the text.

    A partial index is used only when the query's WHERE implies the index's. SQLite
    plans again with the bound values, but PostgreSQL may plan a statement psycopg
    prepared (one run five times) once for every value, and such a generic plan
    cannot use an index whose WHERE depends on a parameter: so the index predicates
    and the due queries (`status_is`) spell the statuses out, from one tuple."""
    if not statuses or any(s not in Status._value2member_map_ for s in statuses):
        raise ValueError(f"not statuses: {statuses!r}")
    if len(statuses) == 1:
        return f"status = '{statuses[0]}'"
    return "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")"


def status_is(*statuses: str) -> ColumnElement[bool]:
    """The query side of `status_sql`: the same statuses as literals, never parameters."""
    column = Message.__table__.c.status  # type: ignore[attr-defined]
    if len(statuses) == 1:
        return column == literal_column(f"'{statuses[0]}'")  # type: ignore[no-any-return]
    return column.in_([literal_column(f"'{s}'") for s in statuses])  # type: ignore[no-any-return]


def _partial(name: str, *columns: str, where: str) -> Index:
    return Index(name, *columns, sqlite_where=text(where), postgresql_where=text(where))


# The due queries of beat's tick, the gauges of /metrics, the burn rate and retention
# each have an index of their own, holding only the rows they look for: a final
# message (most of the table, in time) is in none of them but retention's, so neither
# their size nor their upkeep grows with history (migration 0010).
MESSAGE_INDEXES = (
    _partial("ix_messages_due_scheduled", "send_at", where=status_sql(("scheduled",))),
    _partial("ix_messages_due_send", "next_attempt_at", where=status_sql(("queued",))),
    _partial(
        "ix_messages_due_poll",
        "next_poll_at",
        where=status_sql(("sent",)) + " AND next_poll_at IS NOT NULL",
    ),
    _partial(
        "ix_messages_due_expiry",
        "expires_at",
        where=status_sql(("scheduled", "queued")) + " AND expires_at IS NOT NULL",
    ),
    _partial("ix_messages_active", "status", "provider", "priority", where=status_sql(ACTIVE)),
    _partial("ix_messages_sent_at", "provider", "sent_at", where="sent_at IS NOT NULL"),
    _partial(
        "ix_messages_retention",
        "updated_at",
        where=status_sql(FINAL) + " AND redacted_at IS NULL",
    ),
)


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    # Idempotency keys are per owner. Python calls store owner '' (not NULL), so their
    # keys stay unique on SQLite and PostgreSQL alike (NULLs would never collide).
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_messages_owner_idempotency_key"),
        *MESSAGE_INDEXES,
        # The dashboard's "find a message" by number: the newest first, off one index.
        Index("ix_messages_to_created_at", "to", "created_at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    # The API key name that made it over HTTP; '' for Python calls (`get_status`: None).
    owner: str = Field(default="", max_length=OWNER_MAX, sa_column_kwargs={"server_default": ""})
    # Indexed for the dashboard's "find a message" by key alone (and `to`, below).
    idempotency_key: str | None = Field(default=None, max_length=200, index=True)
    to: str = Field(max_length=20)
    text: str = Field(sa_column=Column(Text, nullable=False))
    sender: str | None = Field(default=None, max_length=20)
    provider: str = Field(max_length=20)
    fallbacks: str = Field(default="", max_length=200)  # comma list, tried in order
    encoding: str = Field(default="gsm7", max_length=8)
    segments: int = 1
    flash: bool = False
    status: str = Field(default="queued", max_length=16)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    attempts: int = 0  # send attempts that reached (or tried to reach) the gateway
    provider_message_id: str | None = Field(default=None, index=True, max_length=64)
    callback_url: str | None = Field(default=None, max_length=2000)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    send_at: datetime | None = None
    next_attempt_at: datetime | None = None
    claimed_at: datetime | None = None
    # The claiming worker process (`worker.resilience.liveness`): its rows settle soon
    # after it dies.
    claimed_by: str | None = Field(default=None, max_length=100)
    # The claim itself (one per send task): a claim whose commit answer was lost takes
    # its own rows up again by it, and no other claim's rows.
    claim_token: str | None = Field(default=None, max_length=32)
    # When a request carrying this message first went out and its answer was lost (the
    # gateway may have it): a resend that counts on the gateway refusing copies within
    # its window (SMSClub: 2 min) is only made while that window, from here, lasts.
    maybe_sent_at: datetime | None = None
    sent_at: datetime | None = None
    next_poll_at: datetime | None = None
    poll_count: int = 0
    # Status polls that failed in a row (gateway down): retried with backoff, and not
    # counted against SMSQ_POLL_SCHEDULE.
    poll_failures: int = 0
    # Per-part delivery states of a long message, when a gateway reports parts
    # one by one: JSON {"1": "delivered", "2": "sent"}. Delivered only when all are.
    part_status: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Traffic class (`producer.traffic`): high | normal | bulk. Chooses the send queue
    # and who takes the next rate-limit slot where an account's limit binds.
    priority: str = Field(
        default="normal", max_length=8, sa_column_kwargs={"server_default": "normal"}
    )
    # Validity: not handed to a gateway by `expires_at` (due time + ttl) -> `expired`.
    ttl: int | None = None
    expires_at: datetime | None = None
    # When retention (SMSQ_RETENTION_DAYS) masked the number and removed the text and
    # the events' raw payloads of this final message; None: kept whole.
    redacted_at: datetime | None = None


class Suppression(SQLModel, table=True):
    """A number that must not get messages (an opt-out): one global list for every owner.

    `scope` "all" refuses every message to it; "bulk" only bulk-priority ones
    (`producer.suppressions.suppressed_for`)."""

    __tablename__ = "suppressions"

    number: str = Field(primary_key=True, max_length=20)  # normalised like `to`
    scope: str = Field(default="all", max_length=8)
    reason: str | None = Field(default=None, max_length=200)
    added_by: str | None = Field(default=None, max_length=OWNER_MAX)  # key name; None: Python
    created_at: datetime = Field(default_factory=utcnow)


class MessageEvent(SQLModel, table=True):
    """Every status change, attempt and report, with its source and raw payload."""

    __tablename__ = "message_events"
    # Pushes not matched to a message yet (message_id NULL), looked up by the gateway's
    # id when the send's answer is stored; matched events are not in it.
    __table_args__ = (
        _partial(
            "ix_message_events_unmatched",
            "provider",
            "provider_message_id",
            where="message_id IS NULL",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_id: str | None = Field(default=None, index=True, max_length=32)
    provider: str | None = Field(default=None, max_length=20)
    provider_message_id: str | None = Field(default=None, max_length=64)
    source: str = Field(max_length=16)  # producer, worker, poll, push, beat, cli
    kind: str = Field(max_length=16)  # status, attempt, report, retry
    old_status: str | None = Field(default=None, max_length=16)
    new_status: str | None = Field(default=None, max_length=16)
    applied: bool = True  # False: a late, duplicate or unknown report, kept only
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    raw: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)


class AppNotification(SQLModel, table=True):
    """A status change to POST to the application's `callback_url` (an outbox row).

    Written in the same transaction as the status change, so a crash never
    loses one; a task delivers it, retrying with backoff, apart from sends.
    """

    __tablename__ = "app_notifications"
    # Beat's tick looks for pending ones that are due and for stuck `posting` ones;
    # delivered and failed notifications (the history) are in neither index.
    __table_args__ = (
        _partial("ix_app_notifications_due", "next_attempt_at", where="state = 'pending'"),
        _partial("ix_app_notifications_posting", "updated_at", where="state = 'posting'"),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(index=True, max_length=32)
    provider: str | None = Field(default=None, max_length=20)
    url: str = Field(max_length=2000)
    payload: str = Field(sa_column=Column(Text, nullable=False))  # the JSON body, as sent
    # pending|posting|delivered|failed
    state: str = Field(default="pending", max_length=12)
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default_factory=utcnow)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class BalanceSnapshot(SQLModel, table=True):
    """One balance check of one provider: the history behind burn rates and projections."""

    __tablename__ = "balance_snapshots"

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(index=True, max_length=20)
    amount: float | None = None  # None when the check failed
    unit: str | None = Field(default=None, max_length=16)
    expires_at: datetime | None = None  # the credits' expiry, where the gateway reports it
    active: bool | None = None  # None: the gateway does not say
    state: str = Field(default="active", max_length=12)  # active|expired|inactive|error
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class AlertState(SQLModel, table=True):
    """Whether an alert kind is firing for a provider, shared by every process and host.

    Raising an alert is a conditional update from not firing to firing, so of
    two checks racing on two hosts exactly one raises it; it re-arms (back to
    not firing) only once the condition has cleared with some margin.
    """

    __tablename__ = "alert_states"

    provider: str = Field(primary_key=True, max_length=20)
    kind: str = Field(primary_key=True, max_length=16)  # low_balance|expiring|expired|inactive
    firing: bool = False
    fired_at: datetime | None = None
    cleared_at: datetime | None = None
    last_alert_id: int | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class Alert(SQLModel, table=True):
    """A raised balance alert (the history): what was seen and the sentence sent."""

    __tablename__ = "alerts"

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(index=True, max_length=20)
    kind: str = Field(max_length=16)
    message: str = Field(sa_column=Column(Text, nullable=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))  # the JSON body, no secrets
    created_at: datetime = Field(default_factory=utcnow, index=True)


class AlertDelivery(SQLModel, table=True):
    """Outbox row: one alert to one channel (webhook, email), retried until delivered.

    Written in the alert's transaction, so a channel that is down at first
    never loses the alert. The channel's address comes from the settings at
    delivery time (a webhook URL may carry a token: it is never stored).
    """

    __tablename__ = "alert_deliveries"

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(index=True)
    channel: str = Field(max_length=12)  # webhook|email
    state: str = Field(default="pending", index=True, max_length=12)  # pending|delivered|failed
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default_factory=utcnow, index=True)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class UiStat(SQLModel, table=True):
    """The dashboard's summary: status changes per gateway in one time bucket.

    Kept by beat's roll-up (`worker.ui.rollup`) from `message_events` past a
    watermark, so no page scans the messages. `width` is the bucket's length in
    seconds (300 and 3600), `bucket` its start in Unix seconds. `hist`: for
    `delivered`, a JSON list of counts per latency bin (`worker.ui.stats.BINS`)
    of the time from `send_sms` to delivered."""

    __tablename__ = "ui_stats"

    width: int = Field(primary_key=True)
    bucket: int = Field(primary_key=True)
    provider: str = Field(primary_key=True, max_length=20)
    status: str = Field(primary_key=True, max_length=16)
    count: int = 0
    segments: int = 0
    hist: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class UiRollup(SQLModel, table=True):
    """How far the roll-up has read `message_events` (its watermark, by event id)."""

    __tablename__ = "ui_rollup"

    name: str = Field(primary_key=True, max_length=32)
    last_event_id: int = 0
    events: int = 0  # events read in all
    updated_at: datetime = Field(default_factory=utcnow)


class UiAction(SQLModel, table=True):
    """What an operator did in the dashboard (cancel, suppress, unsuppress), and who."""

    __tablename__ = "ui_actions"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=100)
    action: str = Field(max_length=32)
    target: str = Field(max_length=64)  # a message id or a number
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, index=True)
