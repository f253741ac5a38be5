"""Per-key semantic locks: the holder of each lock key and the sagas waiting for it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

A definition may declare ``lock:`` (a JMESPath over the input): at most one saga of it
per key runs at a time. ``saga_locks`` names each key's holder; ``saga_lock_waiters``
holds the sagas waiting for a key, in arrival order (``id``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the lock tables."""
    op.create_table(
        "saga_locks",
        sa.Column("lock_key", sa.String(length=300), nullable=False, comment="<saga type>:<key>"),
        sa.Column(
            "holder", sa.String(length=36), nullable=True, comment="the saga that holds the key"
        ),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("lock_key", name="pk_saga_locks"),
    )
    op.create_table(
        "saga_lock_waiters",
        sa.Column("id", _big_id, autoincrement=True, nullable=False, comment="arrival order"),
        sa.Column("lock_key", sa.String(length=300), nullable=False),
        sa.Column("saga_id", sa.String(length=36), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_saga_lock_waiters"),
        sa.UniqueConstraint("saga_id", name="uq_saga_lock_waiters_saga_id"),
    )
    op.create_index(
        "ix_saga_lock_waiters_lock_key_id", "saga_lock_waiters", ["lock_key", "id"]
    )


def downgrade() -> None:
    """Drop the lock tables."""
    op.drop_index("ix_saga_lock_waiters_lock_key_id", table_name="saga_lock_waiters")
    op.drop_table("saga_lock_waiters")
    op.drop_table("saga_locks")
