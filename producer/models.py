"""The message store's schema (SQLModel). `worker/` imports it; the producer owns it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Aware UTC: the store keeps every time in UTC (SQLModel's UTCDateTime)."""
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Message(SQLModel, table=True):
    __tablename__ = "messages"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    idempotency_key: str | None = Field(default=None, unique=True, max_length=200)
    to: str = Field(max_length=20)
    text: str = Field(sa_column=Column(Text, nullable=False))
    sender: str | None = Field(default=None, max_length=20)
    provider: str = Field(index=True, max_length=20)
    fallbacks: str = Field(default="", max_length=200)  # comma list, tried in order
    encoding: str = Field(default="gsm7", max_length=8)
    segments: int = 1
    flash: bool = False
    status: str = Field(default="queued", index=True, max_length=16)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    attempts: int = 0  # send attempts that reached (or tried to reach) the gateway
    provider_message_id: str | None = Field(default=None, index=True, max_length=64)
    callback_url: str | None = Field(default=None, max_length=2000)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    send_at: datetime | None = Field(default=None, index=True)
    next_attempt_at: datetime | None = Field(default=None, index=True)
    claimed_at: datetime | None = None
    sent_at: datetime | None = None
    next_poll_at: datetime | None = Field(default=None, index=True)
    poll_count: int = 0
    # Per-part delivery states of a long message, when a gateway reports parts
    # one by one: JSON {"1": "delivered", "2": "sent"}. Delivered only when all are.
    part_status: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class MessageEvent(SQLModel, table=True):
    """Every status change, attempt and report, with its source and raw payload."""

    __tablename__ = "message_events"

    id: int | None = Field(default=None, primary_key=True)
    message_id: str | None = Field(default=None, index=True, max_length=32)
    provider: str | None = Field(default=None, max_length=20)
    provider_message_id: str | None = Field(default=None, index=True, max_length=64)
    source: str = Field(max_length=16)  # producer, worker, poll, push, beat, cli
    kind: str = Field(max_length=16)  # status, attempt, report, retry
    old_status: str | None = Field(default=None, max_length=16)
    new_status: str | None = Field(default=None, max_length=16)
    applied: bool = True  # False: a late, duplicate or unknown report, kept only
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    raw: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class AppNotification(SQLModel, table=True):
    """A status change to POST to the application's `callback_url` (an outbox row).

    Written in the same transaction as the status change, so a crash never
    loses one; a task delivers it, retrying with backoff, apart from sends.
    """

    __tablename__ = "app_notifications"

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(index=True, max_length=32)
    provider: str | None = Field(default=None, max_length=20)
    url: str = Field(max_length=2000)
    payload: str = Field(sa_column=Column(Text, nullable=False))  # the JSON body, as sent
    state: str = Field(default="pending", index=True, max_length=12)  # pending|delivered|failed
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default_factory=utcnow, index=True)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
