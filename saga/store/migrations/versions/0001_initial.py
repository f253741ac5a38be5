"""Initial schema: every table of ``saga/store/tables.py``.

Revision ID: 0001
Revises:
Create Date: 2024-11-24

Written out in full (not imported from ``tables``) so the migration stays what it was
when later revisions change the model.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create every table and index."""
    op.create_table(
        "saga_audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("saga_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False, comment="1, 2, ... per saga"),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column(
            "detail",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saga_audit_log")),
        sa.UniqueConstraint("saga_id", "seq", name=op.f("uq_saga_audit_log_saga_id_seq")),
    )
    op.create_index(
        op.f("ix_saga_audit_log_recorded_at"), "saga_audit_log", ["recorded_at"], unique=False
    )
    op.create_table(
        "saga_consumer_offsets",
        sa.Column("group_id", sa.String(length=200), nullable=False),
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column(
            "next_offset", sa.BigInteger(), nullable=False, comment="the next offset to read"
        ),
        sa.PrimaryKeyConstraint(
            "group_id", "topic", "partition", name=op.f("pk_saga_consumer_offsets")
        ),
    )
    op.create_table(
        "saga_definitions",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="canonical JSON of the definition",
        ),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name=op.f("pk_saga_definitions")),
    )
    op.create_table(
        "saga_inbox",
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_saga_inbox")),
    )
    op.create_table(
        "saga_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
            comment="monotonic publish order",
        ),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column(
            "headers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="list of [name, value] string pairs",
        ),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column(
            "shard", sa.Integer(), nullable=False, comment="relay shard that publishes this row"
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saga_outbox")),
        sa.UniqueConstraint("message_id", name=op.f("uq_saga_outbox_message_id")),
    )
    op.create_index(
        op.f("ix_saga_outbox_published_at"), "saga_outbox", ["published_at"], unique=False
    )
    op.create_index(
        "ix_saga_outbox_unpublished",
        "saga_outbox",
        ["shard", "id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "saga_step_executions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("saga_id", sa.String(length=36), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False, comment="command or compensation"),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error_code", sa.String(length=200), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saga_step_executions")),
        sa.UniqueConstraint(
            "saga_id",
            "step",
            "attempt",
            "kind",
            name=op.f("uq_saga_step_executions_saga_id_step_attempt_kind"),
        ),
    )
    op.create_table(
        "saga_timers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("saga_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column(
            "step", sa.String(length=200), nullable=False, comment="'' for saga-level timers"
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saga_timers")),
        sa.UniqueConstraint(
            "saga_id",
            "kind",
            "step",
            "attempt",
            name=op.f("uq_saga_timers_saga_id_kind_step_attempt"),
        ),
    )
    op.create_index(op.f("ix_saga_timers_due_at"), "saga_timers", ["due_at"], unique=False)
    op.create_table(
        "sagas",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("saga_type", sa.String(length=200), nullable=False),
        sa.Column("saga_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column(
            "context",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="the engine's full SagaState",
        ),
        sa.Column(
            "revision", sa.Integer(), nullable=False, comment="optimistic concurrency counter"
        ),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("correlation_id", sa.String(length=36), nullable=True),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sagas")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_sagas_idempotency_key")),
    )
    op.create_index(op.f("ix_sagas_created_at"), "sagas", ["created_at"], unique=False)
    op.create_index(
        op.f("ix_sagas_saga_type_status"), "sagas", ["saga_type", "status"], unique=False
    )
    op.create_index(
        op.f("ix_sagas_status_updated_at"), "sagas", ["status", "updated_at"], unique=False
    )


def downgrade() -> None:
    """Drop every table (and all data)."""
    op.drop_index(op.f("ix_sagas_status_updated_at"), table_name="sagas")
    op.drop_index(op.f("ix_sagas_saga_type_status"), table_name="sagas")
    op.drop_index(op.f("ix_sagas_created_at"), table_name="sagas")
    op.drop_table("sagas")
    op.drop_index(op.f("ix_saga_timers_due_at"), table_name="saga_timers")
    op.drop_table("saga_timers")
    op.drop_table("saga_step_executions")
    op.drop_index(
        "ix_saga_outbox_unpublished",
        table_name="saga_outbox",
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    op.drop_index(op.f("ix_saga_outbox_published_at"), table_name="saga_outbox")
    op.drop_table("saga_outbox")
    op.drop_table("saga_inbox")
    op.drop_table("saga_definitions")
    op.drop_table("saga_consumer_offsets")
    op.drop_index(op.f("ix_saga_audit_log_recorded_at"), table_name="saga_audit_log")
    op.drop_table("saga_audit_log")
