"""What the statement groups of one batch transaction share: its connection.

:class:`TxConnection` holds the connection, the dialect, the store clock and one
memory of the transaction: the saga rows it holds locked (so they need no second
look) and, on PostgreSQL, the heads of their audit chains.
:class:`saga.store.SqlTransaction` is this class plus one mixin per group of tables.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from saga.store._records import as_utc


class TxConnection:
    """The connection of one batch transaction, and what its statements share."""

    def __init__(self, conn: AsyncConnection, *, clock: Callable[[], datetime]) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self._clock = clock
        # Revisions of the saga rows this transaction holds locked (loaded FOR UPDATE,
        # or anything on SQLite, whose transaction holds the database write lock): no
        # other writer can change them before commit, so they need no second look.
        self._locked: dict[str, int] = {}
        # The last audit record ``(seq, hash)`` of sagas locked by this transaction
        # (``None``: no record yet), as loaded with them and as appended since.
        self._audit_heads: dict[str, tuple[int, str] | None] = {}
        self.earliest_timer: datetime | None = None
        """The earliest due time of the timers this transaction set (``None``: none)."""

    @property
    def postgres(self) -> bool:
        """Whether the backend is PostgreSQL (row locks, ``SKIP LOCKED``, ``NOTIFY``)."""
        return self.dialect == "postgresql"

    def insert(self, table: Any) -> Any:
        """The dialect's ``INSERT`` (it has ``on_conflict_do_nothing/_update``)."""
        return (postgresql.insert if self.postgres else sqlite.insert)(table)

    def now(self) -> datetime:
        """The store clock, in UTC."""
        return as_utc(self._clock())
