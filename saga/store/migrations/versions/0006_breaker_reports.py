"""Circuit breaker states as each coordinator last reported them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

A breaker lives in the memory of one coordinator process; ``saga_breaker_reports``
holds what each coordinator last reported, so the console can show it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the breaker reports table."""
    op.create_table(
        "saga_breaker_reports",
        sa.Column(
            "member",
            sa.String(length=200),
            nullable=False,
            comment="host:pid:id of the coordinator",
        ),
        sa.Column("participant", sa.String(length=200), nullable=False),
        sa.Column(
            "state", sa.String(length=16), nullable=False, comment="closed, open or half_open"
        ),
        sa.Column("calls", sa.Integer(), nullable=False, comment="outcomes in the window"),
        sa.Column(
            "failures",
            sa.Integer(),
            nullable=False,
            comment="failures and timeouts among them",
        ),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "stale_after",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="not refreshed by then: stale",
        ),
        sa.PrimaryKeyConstraint("member", "participant", name="pk_saga_breaker_reports"),
    )


def downgrade() -> None:
    """Drop the breaker reports table."""
    op.drop_table("saga_breaker_reports")
