"""traffic classes: a message's priority (high | normal | bulk), its validity (ttl and
the moment it expires unsent)

Revision ID: 0008
Revises: 0006

Written next to the owner/suppressions branch's "0007" (down_revision "0006"): when
the two branches merge, this revision's down_revision is re-pointed to "0007" so the
history stays one line. The two touch different columns, so either order works.

Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "priority",
                sqlmodel.sql.sqltypes.AutoString(length=8),
                nullable=False,
                server_default="normal",
            )
        )
        batch_op.add_column(sa.Column("ttl", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.create_index("ix_messages_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_expires_at")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("ttl")
        batch_op.drop_column("priority")
