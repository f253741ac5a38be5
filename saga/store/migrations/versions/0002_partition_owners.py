"""Partition ownership: owner epochs on consumer offsets; outbox rows by owning topic.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

``saga_consumer_offsets`` gains ``epoch``, ``owner`` and ``claimed_at`` (a partition's
owner generation, checked by every batch) and ``next_offset`` may be NULL (a claimed
partition with nothing stored yet). ``saga_outbox`` gains ``owner_topic``: a row is
published by the relay of ``(owner_topic, shard)``, the owner of that topic partition.
Rows written before this revision have an empty ``owner_topic``; drain the outbox
(let the relays publish everything) before upgrading a running deployment.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the ownership columns and the new unpublished-rows index."""
    with op.batch_alter_table("saga_consumer_offsets") as batch:
        batch.alter_column("next_offset", existing_type=sa.BigInteger(), nullable=True)
        batch.add_column(
            sa.Column(
                "epoch",
                sa.BigInteger(),
                nullable=False,
                server_default="0",
                comment="owner generation",
            )
        )
        batch.add_column(
            sa.Column(
                "owner",
                sa.String(length=200),
                nullable=True,
                comment="the member that claimed the partition",
            )
        )
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_index(
        "ix_saga_outbox_unpublished",
        table_name="saga_outbox",
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    with op.batch_alter_table("saga_outbox") as batch:
        batch.alter_column(
            "shard",
            existing_type=sa.Integer(),
            existing_nullable=False,
            comment="that topic's partition",
            existing_comment="relay shard that publishes this row",
        )
        batch.add_column(
            sa.Column(
                "owner_topic",
                sa.String(length=249),
                nullable=False,
                server_default="",
                comment="the consumed topic whose partition owner publishes this row",
            )
        )
    op.create_index(
        "ix_saga_outbox_unpublished",
        "saga_outbox",
        ["owner_topic", "shard", "id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )


def downgrade() -> None:
    """Drop the ownership columns again."""
    op.drop_index(
        "ix_saga_outbox_unpublished",
        table_name="saga_outbox",
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    with op.batch_alter_table("saga_outbox") as batch:
        batch.drop_column("owner_topic")
        batch.alter_column(
            "shard",
            existing_type=sa.Integer(),
            existing_nullable=False,
            comment="relay shard that publishes this row",
            existing_comment="that topic's partition",
        )
    op.create_index(
        "ix_saga_outbox_unpublished",
        "saga_outbox",
        ["shard", "id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    op.execute("DELETE FROM saga_consumer_offsets WHERE next_offset IS NULL")
    with op.batch_alter_table("saga_consumer_offsets") as batch:
        batch.drop_column("claimed_at")
        batch.drop_column("owner")
        batch.drop_column("epoch")
        batch.alter_column("next_offset", existing_type=sa.BigInteger(), nullable=False)
