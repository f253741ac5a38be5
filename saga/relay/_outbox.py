"""The relay's own queries on the ``saga_outbox`` table (SQLAlchemy Core).

Each method is one short database transaction (on SQLite, ``mark_and_fetch`` is two):
the relay never holds a database transaction open across Kafka I/O (on SQLite every
transaction takes the write lock).

Database errors are translated by the store's :func:`saga.store.translate_errors`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, all_, any_, bindparam, delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from saga.store import chunks, single_statement_engine, translate_errors
from saga.store.tables import UtcDateTime, outbox, outbox_quarantine

translate_db_errors = translate_errors
"""The store's one mapping of database errors onto :mod:`saga.errors`."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox row, ready to send."""

    id: int
    message_id: str
    topic: str
    key: bytes | None
    headers: list[tuple[str, bytes]]
    payload: bytes


_LANE_ROWS = (
    select(
        outbox.c.id,
        outbox.c.message_id,
        outbox.c.topic,
        outbox.c.key,
        outbox.c.headers,
        outbox.c.payload,
    )
    .where(
        outbox.c.owner_topic == bindparam("lane_topic"),
        outbox.c.shard == bindparam("lane_shard"),
        outbox.c.published_at.is_(None),
    )
    .order_by(outbox.c.id)
    .limit(bindparam("limit", type_=Integer))
)
"""The oldest unpublished rows of one lane (statement objects are built once).

The relay runs its statements on every batch; SQLAlchemy works out a statement's cache
key once per statement object, so a statement built anew per batch paid that each time.
No parameter is named after a column: in a statement with an UPDATE (below), SQLAlchemy
would take such a parameter as a value to SET.
"""


@functools.cache
def _mark_statement(column: str, *, postgres: bool) -> Any:
    """``published_at`` set on the rows whose ``column`` is one of ``:values``.

    Built once per column and backend. PostgreSQL gets ``= ANY(:values)`` (one prepared
    statement for any number of rows); SQLite an expanding ``IN`` list, bound in chunks.
    """
    col = outbox.c[column]
    values = (
        col == any_(bindparam("values", type_=ARRAY(col.type)))
        if postgres
        else col.in_(bindparam("values", expanding=True))
    )
    marked_at = bindparam("marked_at", type_=UtcDateTime)
    return (
        update(outbox)
        .where(values)
        .values(published_at=func.coalesce(outbox.c.published_at, marked_at))
    )


@functools.cache
def _fetch_statement(*, postgres: bool) -> Any:
    """The lane's oldest unpublished rows except those of ``:excluding``.

    The relay leaves out rows it has published but not marked yet. PostgreSQL gets
    ``<> ALL(:excluding)``, SQLite an expanding ``NOT IN`` (at most ``CHUNK`` ids).
    """
    if postgres:
        excluding = bindparam("excluding", type_=ARRAY(outbox.c.id.type))
        return _LANE_ROWS.where(outbox.c.id != all_(excluding))
    return _LANE_ROWS.where(outbox.c.id.not_in(bindparam("excluding", expanding=True)))


@functools.cache
def _mark_and_fetch_statement() -> Any:
    """PostgreSQL: mark ``:marked`` published and read the lane's next rows, in ONE statement.

    The mark is a data-modifying CTE; the read runs on the statement's snapshot, which
    does not see the mark, so it leaves out the marked ids itself.
    """
    ids = bindparam("marked", type_=ARRAY(outbox.c.id.type))
    marked = (
        update(outbox)
        .where(outbox.c.id == any_(ids))
        .values(
            published_at=func.coalesce(
                outbox.c.published_at, bindparam("marked_at", type_=UtcDateTime)
            )
        )
        .returning(outbox.c.id)
        .cte("marked")
    )
    return _LANE_ROWS.where(outbox.c.id != all_(ids)).add_cte(marked)


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    # Stored as a JSON list of [name, value] strings; Kafka header values are bytes.
    return [(str(name), b"" if value is None else str(value).encode()) for name, value in raw or ()]


class OutboxTable:
    """The relay's view of the outbox: unpublished rows of one lane, marks, pruning."""

    def __init__(self, engine: AsyncEngine, shard: int, owner_topic: str = "") -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._single = single_statement_engine(engine)  # each method runs ONE statement
        self._shard = shard
        self._owner_topic = owner_topic

    async def fetch_unpublished(
        self, limit: int, *, excluding: Sequence[int] = ()
    ) -> list[OutboxRow]:
        """The oldest unpublished rows of the lane, in id order, but those of ``excluding``.

        Args:
            limit: Most rows to return.
            excluding: Outbox ids to leave out (rows published but not marked yet; at
                most ``CHUNK`` of them).
        """
        params = {**self._lane(limit), "excluding": list(excluding)}
        with translate_db_errors("read outbox"):
            async with self._single.begin() as conn:
                result = await conn.execute(_fetch_statement(postgres=self._postgres), params)
                rows = result.all()
        return self._rows(rows)

    async def mark_and_fetch(
        self, published: Sequence[int], now: datetime, limit: int
    ) -> list[OutboxRow]:
        """Mark ``published`` (as :meth:`mark_published`), then read the next rows.

        On PostgreSQL both are ONE statement (one round trip where a busy relay paid two);
        on SQLite they are the two calls.
        """
        if not self._postgres or not published:
            await self.mark_published(published, now)
            return await self.fetch_unpublished(limit)
        params = {**self._lane(limit), "marked": list(published), "marked_at": now}
        with translate_db_errors("mark outbox rows published and read the next"):
            async with self._single.begin() as conn:
                rows = (await conn.execute(_mark_and_fetch_statement(), params)).all()
        return self._rows(rows)

    def _lane(self, limit: int) -> dict[str, Any]:
        """The parameters of :data:`_LANE_ROWS`: this lane, at most ``limit`` rows."""
        return {"lane_topic": self._owner_topic, "lane_shard": self._shard, "limit": limit}

    @staticmethod
    def _rows(rows: Sequence[Any]) -> list[OutboxRow]:
        return [
            OutboxRow(
                id=r.id,
                message_id=r.message_id,
                topic=r.topic,
                key=r.key,
                headers=_headers(r.headers),
                payload=r.payload,
            )
            for r in rows
        ]

    async def mark_published(self, ids: Sequence[int], now: datetime) -> int:
        """Set ``published_at`` on the given rows (rows marked already keep theirs).

        Rows are found by primary key only (one statement on PostgreSQL, ``IN`` chunks on
        SQLite): a condition on ``published_at`` would let the planner walk the
        ``published_at`` indexes instead, which under a steady stream are full of dead
        entries for NULL (every mark leaves one).

        Returns:
            How many of the rows exist.
        """
        return await self._mark("id", list(ids), now)

    async def mark_published_messages(self, message_ids: Sequence[str], now: datetime) -> int:
        """Set ``published_at`` on the rows with these message ids (recovery).

        Returns:
            How many of the rows exist.
        """
        return await self._mark("message_id", list(message_ids), now)

    async def _mark(self, column: str, values: list[Any], now: datetime) -> int:
        """Set ``published_at`` where ``column`` is one of ``values`` (kept if set)."""
        if not values:
            return 0
        stmt = _mark_statement(column, postgres=self._postgres)
        parts = [values] if self._postgres else chunks(values)
        marked = 0
        with translate_db_errors("mark outbox rows published"):
            async with self._single.begin() as conn:
                for part in parts:
                    result = await conn.execute(stmt, {"values": list(part), "marked_at": now})
                    marked += int(result.rowcount)
        return marked

    async def quarantine(self, row_id: int, reason: str, attempts: int, now: datetime) -> bool:
        """Move an unpublished row to ``saga_outbox_quarantine`` (one transaction).

        Returns:
            Whether the row was moved (``False``: it is gone or was published meanwhile).
        """
        c = outbox.c
        copied = select(
            c.id,
            c.message_id,
            c.topic,
            c.key,
            c.headers,
            c.payload,
            c.owner_topic,
            c.shard,
            c.created_at,
            literal(now, UtcDateTime),
            literal(attempts),
            literal(reason),
        ).where(c.id == row_id, c.published_at.is_(None))
        names = [col.name for col in outbox_quarantine.c]
        with translate_db_errors("quarantine an outbox row"):
            async with self._engine.begin() as conn:
                moved = await conn.execute(outbox_quarantine.insert().from_select(names, copied))
                if not moved.rowcount:
                    return False
                await conn.execute(delete(outbox).where(c.id == row_id))
        return True

    async def prune(self, published_before: datetime, limit: int) -> int:
        """Delete up to ``limit`` rows of the lane published before the given time.

        Returns:
            How many rows were deleted.
        """
        oldest = (
            select(outbox.c.id)
            .where(
                outbox.c.owner_topic == self._owner_topic,
                outbox.c.shard == self._shard,
                outbox.c.published_at.is_not(None),
                outbox.c.published_at < published_before,
            )
            .order_by(outbox.c.id)
            .limit(limit)
        )
        stmt = delete(outbox).where(outbox.c.id.in_(oldest))
        with translate_db_errors("prune outbox"):
            async with self._single.begin() as conn:
                result = await conn.execute(stmt)
        return int(result.rowcount)
