"""messages belong to an owner (the API key name; '' for Python calls) and idempotency
keys are unique per owner, not globally

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NEW = "uq_messages_owner_idempotency_key"
# SQLite's unique constraint of 0001 has no name: batch mode names it by convention.
CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _old_constraint_name() -> str:
    """The unnamed UNIQUE (idempotency_key) of 0001 as this database calls it."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        return "uq_messages_idempotency_key"
    for constraint in sa.inspect(bind).get_unique_constraints("messages"):
        if constraint["column_names"] == ["idempotency_key"]:
            return str(constraint["name"])
    raise RuntimeError("messages has no unique constraint on idempotency_key")


def upgrade() -> None:
    old = _old_constraint_name()
    with op.batch_alter_table("messages", naming_convention=CONVENTION) as batch_op:
        batch_op.add_column(
            sa.Column(
                "owner",
                sqlmodel.sql.sqltypes.AutoString(length=100),
                nullable=False,
                server_default="",
            )
        )
        batch_op.drop_constraint(old, type_="unique")
        batch_op.create_unique_constraint(NEW, ["owner", "idempotency_key"])


def downgrade() -> None:
    with op.batch_alter_table("messages", naming_convention=CONVENTION) as batch_op:
        batch_op.drop_constraint(NEW, type_="unique")
        batch_op.create_unique_constraint("uq_messages_idempotency_key", ["idempotency_key"])
        batch_op.drop_column("owner")
