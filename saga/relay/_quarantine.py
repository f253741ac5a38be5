"""The outbox quarantine: rows Kafka refused for good, as an operator sees and handles them.

A relay moves a row here (see :meth:`OutboxTable.quarantine`) after Kafka refused it
``quarantine_after_refusals`` times. Nothing is lost: the row keeps its message id,
topic, key, headers and payload. Once the cause is fixed (the topic created, a size
limit raised), :meth:`Quarantine.requeue` puts it back at the end of its lane; a row
that must never be sent is removed with :meth:`Quarantine.discard`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from saga.lifecycle import utc_now
from saga.store import notify_outbox, translate_errors
from saga.store.tables import outbox, outbox_quarantine


@dataclass(frozen=True, slots=True)
class QuarantinedRow:
    """One quarantined outbox row, without its payload."""

    message_id: str
    topic: str
    owner_topic: str
    shard: int
    payload_bytes: int
    attempts: int
    reason: str
    created_at: datetime
    quarantined_at: datetime


class Quarantine:
    """The ``saga_outbox_quarantine`` table of one database (coordinator or service)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def rows(self, limit: int = 1_000) -> list[QuarantinedRow]:
        """The quarantined rows, oldest first."""
        q = outbox_quarantine.c
        query = (
            select(
                q.message_id,
                q.topic,
                q.owner_topic,
                q.shard,
                func.length(q.payload).label("payload_bytes"),
                q.attempts,
                q.reason,
                q.created_at,
                q.quarantined_at,
            )
            .order_by(q.id)
            .limit(limit)
        )
        with translate_errors("read the outbox quarantine"):
            async with self._engine.connect() as conn:
                result = await conn.execute(query)
                return [QuarantinedRow(**row._mapping) for row in result]

    async def requeue(self, message_ids: Sequence[str] | None = None) -> list[str]:
        """Move rows back into the outbox, at the end of their lanes, and wake the relays.

        Args:
            message_ids: The rows to move; ``None`` moves every quarantined row.

        Returns:
            The message ids moved (ids not in the quarantine are left out).
        """
        q = outbox_quarantine.c
        which = select(outbox_quarantine).order_by(q.id)
        if message_ids is not None:
            which = which.where(q.message_id.in_(list(message_ids)))
        now = utc_now()
        with translate_errors("requeue quarantined outbox rows"):
            async with self._engine.begin() as conn:
                rows = (await conn.execute(which)).all()
                if not rows:
                    return []
                await conn.execute(
                    insert(outbox),
                    [
                        {
                            "message_id": r.message_id,
                            "topic": r.topic,
                            "key": r.key,
                            "headers": r.headers,
                            "payload": r.payload,
                            "owner_topic": r.owner_topic,
                            "shard": r.shard,
                            "created_at": now,
                            "published_at": None,
                        }
                        for r in rows
                    ],
                )
                moved = [r.message_id for r in rows]
                await conn.execute(delete(outbox_quarantine).where(q.message_id.in_(moved)))
                await notify_outbox(conn, {(r.owner_topic, r.shard) for r in rows})
        return moved

    async def discard(self, message_ids: Sequence[str]) -> list[str]:
        """Delete quarantined rows for good.

        Returns:
            The message ids deleted.
        """
        q = outbox_quarantine.c
        with translate_errors("discard quarantined outbox rows"):
            async with self._engine.begin() as conn:
                found = (
                    await conn.execute(
                        select(q.message_id).where(q.message_id.in_(list(message_ids)))
                    )
                ).scalars()
                gone = list(found)
                await conn.execute(delete(outbox_quarantine).where(q.message_id.in_(gone)))
        return gone
