"""What the example services share: table metadata, clock, and the row of an order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, Row, String, Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

metadata = MetaData()
"""Tables of all four example services (distinct names, so they can share a database)."""


def utc_now() -> datetime:
    """The current time (UTC)."""
    return datetime.now(UTC)


def text(name: str, length: int = 100, *, nullable: bool = False, **extra: Any) -> Column[str]:
    """A string column (``NOT NULL`` unless ``nullable``)."""
    return Column(name, String(length), nullable=nullable, **extra)


def timestamp(name: str) -> Column[datetime]:
    """A ``NOT NULL`` timestamp column with a time zone."""
    return Column(name, DateTime(timezone=True), nullable=False)


def order_table(name: str, key: str, *columns: Column[Any]) -> Table:
    """A table of one row per order: the primary key ``key``, a unique ``order_id``."""
    return Table(
        name,
        metadata,
        Column(key, String(100), primary_key=True),
        text("order_id", unique=True),
        *columns,
    )


async def order_row(conn: AsyncConnection, table: Table, order_id: str) -> Row[Any] | None:
    """The row of ``table`` for ``order_id``, or None."""
    return (await conn.execute(select(table).where(table.c.order_id == order_id))).first()


async def set_status(conn: AsyncConnection, table: Table, order_id: str, status: str) -> None:
    """Set the ``status`` (and ``updated_at``) of ``table``'s row for ``order_id``."""
    await conn.execute(
        update(table)
        .where(table.c.order_id == order_id)
        .values(status=status, updated_at=utc_now())
    )


async def leave_tombstone(
    conn: AsyncConnection, table: Table, key: str, order_id: str, **blanks: Any
) -> None:
    """Insert the ``cancelled`` row of an order whose compensation came before its action.

    The action that arrives late finds it and is refused instead of taking effect for
    good. ``key`` is the primary key; ``blanks`` fill the other ``NOT NULL`` columns.
    """
    [key_column] = table.primary_key.columns
    values = {key_column.name: key, "order_id": order_id, "status": "cancelled", **blanks}
    await conn.execute(table.insert().values(updated_at=utc_now(), **values))


async def compensate(
    conn: AsyncConnection,
    table: Table,
    order_id: str,
    key: str,
    *,
    active: str,
    undone: str,
    undo: Callable[[Row[Any]], Awaitable[None]] | None = None,
    **blanks: Any,
) -> bool:
    """Undo the action of ``table`` for ``order_id``, once; True when it had taken effect.

    No row: the action never ran (or is still in flight), so a ``cancelled`` row keyed
    ``key`` is left (:func:`leave_tombstone`, with ``blanks``) and a late action is
    refused. A row in status ``active``: ``undo(row)`` runs and the status becomes
    ``undone``. Any other row: undone already, nothing to do.
    """
    existing = await order_row(conn, table, order_id)
    if existing is None:
        await leave_tombstone(conn, table, key, order_id, **blanks)
        return False
    if existing.status == active:
        if undo is not None:
            await undo(existing)
        await set_status(conn, table, order_id, undone)
    return bool(existing.status != "cancelled")
