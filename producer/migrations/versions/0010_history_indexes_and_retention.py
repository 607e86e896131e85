"""history: partial indexes for the due queries instead of single-column ones, and the
retention marker (`redacted_at`)

Every single-column index on `messages` (but the gateway id's) held every row, final
or not, and was written by every status change; the due queries of beat's tick, the
gauges of /metrics, the burn rate and retention now each have a partial index that
holds only the rows they look for (see `producer.models.MESSAGE_INDEXES`). On a large
store the CREATE INDEX statements take a while (PostgreSQL: writes to `messages` wait
for them), once.

Revision ID: 0010
Revises: 0009

Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# name -> (table, columns, predicate): the same as the models' (they are checked equal
# in tests/unit/store/test_history_indexes.py), written out so this revision stays as
# it is if the models change later.
PARTIAL = {
    "ix_messages_due_scheduled": ("messages", ["send_at"], "status = 'scheduled'"),
    "ix_messages_due_send": ("messages", ["next_attempt_at"], "status = 'queued'"),
    "ix_messages_due_poll": (
        "messages",
        ["next_poll_at"],
        "status = 'sent' AND next_poll_at IS NOT NULL",
    ),
    "ix_messages_due_expiry": (
        "messages",
        ["expires_at"],
        "status IN ('scheduled', 'queued') AND expires_at IS NOT NULL",
    ),
    "ix_messages_active": (
        "messages",
        ["status", "provider", "priority"],
        "status IN ('queued', 'scheduled', 'sending', 'sent')",
    ),
    "ix_messages_sent_at": ("messages", ["provider", "sent_at"], "sent_at IS NOT NULL"),
    "ix_messages_retention": (
        "messages",
        ["updated_at"],
        "status IN ('delivered', 'undelivered', 'expired', 'rejected', 'failed')"
        " AND redacted_at IS NULL",
    ),
    "ix_message_events_unmatched": (
        "message_events",
        ["provider", "provider_message_id"],
        "message_id IS NULL",
    ),
    "ix_app_notifications_due": ("app_notifications", ["next_attempt_at"], "state = 'pending'"),
    "ix_app_notifications_posting": ("app_notifications", ["updated_at"], "state = 'posting'"),
}

# The single-column indexes this revision drops: name -> (table, column).
SINGLE = {
    "ix_messages_provider": ("messages", "provider"),
    "ix_messages_status": ("messages", "status"),
    "ix_messages_created_at": ("messages", "created_at"),
    "ix_messages_send_at": ("messages", "send_at"),
    "ix_messages_next_attempt_at": ("messages", "next_attempt_at"),
    "ix_messages_next_poll_at": ("messages", "next_poll_at"),
    "ix_messages_expires_at": ("messages", "expires_at"),
    "ix_message_events_created_at": ("message_events", "created_at"),
    "ix_message_events_provider_message_id": ("message_events", "provider_message_id"),
    "ix_app_notifications_state": ("app_notifications", "state"),
    "ix_app_notifications_next_attempt_at": ("app_notifications", "next_attempt_at"),
}


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("redacted_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
    for name, (table, _column) in SINGLE.items():
        op.drop_index(name, table_name=table)
    for name, (table, columns, where) in PARTIAL.items():
        op.create_index(
            name,
            table,
            columns,
            unique=False,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )


def downgrade() -> None:
    for name, (table, _columns, _where) in PARTIAL.items():
        op.drop_index(name, table_name=table)
    for name, (table, column) in SINGLE.items():
        op.create_index(name, table, [column], unique=False)
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("redacted_at")
