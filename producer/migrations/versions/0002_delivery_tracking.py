"""delivery tracking: per-part status of long messages, application notifications outbox

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("part_status", sa.Text(), nullable=True))
    op.create_table(
        "app_notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("app_notifications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_app_notifications_message_id"), ["message_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_app_notifications_state"), ["state"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_app_notifications_next_attempt_at"), ["next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("app_notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_app_notifications_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_app_notifications_state"))
        batch_op.drop_index(batch_op.f("ix_app_notifications_message_id"))
    op.drop_table("app_notifications")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("part_status")
