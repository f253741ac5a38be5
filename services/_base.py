"""What the example services share: table metadata, clock, and an insert-or-ignore helper."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import MetaData

metadata = MetaData()
"""Tables of all four example services (distinct names, so they can share a database)."""


def utc_now() -> datetime:
    """The current time (UTC)."""
    return datetime.now(UTC)
