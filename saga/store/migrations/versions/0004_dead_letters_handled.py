"""Dead letters an operator replayed or discarded.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-15

A record cannot be deleted from the DLQ topic: ``saga_dead_letters_handled`` remembers
which dead letters were replayed to their original topic or discarded, by whom and why,
so that listings can hide them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the table of handled dead letters."""
    op.create_table(
        "saga_dead_letters_handled",
        sa.Column("topic", sa.String(length=249), nullable=False, comment="the DLQ topic"),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column(
            "action", sa.String(length=16), nullable=False, comment="replayed or discarded"
        ),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "original_topic",
            sa.String(length=249),
            nullable=True,
            comment="where it was read from",
        ),
        sa.Column(
            "saga_id", sa.String(length=36), nullable=True, comment="the saga its envelope names"
        ),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "topic", "partition", "offset", name="pk_saga_dead_letters_handled"
        ),
    )
    op.create_index(
        "ix_saga_dead_letters_handled_handled_at", "saga_dead_letters_handled", ["handled_at"]
    )


def downgrade() -> None:
    """Drop it again."""
    op.drop_index(
        "ix_saga_dead_letters_handled_handled_at", table_name="saga_dead_letters_handled"
    )
    op.drop_table("saga_dead_letters_handled")
