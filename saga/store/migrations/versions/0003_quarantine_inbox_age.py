"""Outbox quarantine for rows Kafka refuses; an index for pruning the inbox by age.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

``saga_outbox_quarantine`` holds outbox rows that Kafka refused for good (a record over
the size limit, a topic that does not exist): the relay moves such a row there after a
bounded number of attempts, so the rest of its lane is published. ``saga_inbox`` gains
an index on ``received_at``: the inbox is pruned by age on a schedule.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Create the quarantine table and the inbox age index."""
    op.create_table(
        "saga_outbox_quarantine",
        sa.Column(
            "id", sa.BigInteger(), primary_key=True, autoincrement=False, comment="its outbox id"
        ),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("headers", _json, nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("owner_topic", sa.String(length=249), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "attempts", sa.Integer(), nullable=False, comment="publish attempts Kafka refused"
        ),
        sa.Column("reason", sa.Text(), nullable=False, comment="Kafka's last refusal"),
        sa.PrimaryKeyConstraint("id", name="pk_saga_outbox_quarantine"),
        sa.UniqueConstraint("message_id", name="uq_saga_outbox_quarantine_message_id"),
    )
    op.create_index("ix_saga_inbox_received_at", "saga_inbox", ["received_at"])


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_saga_inbox_received_at", table_name="saga_inbox")
    op.drop_table("saga_outbox_quarantine")
