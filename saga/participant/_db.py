"""The participant's tables and SQL: inbox, outbox and consumer offsets in its own database.

The tables are the saga store's own (``saga_inbox``, ``saga_outbox``,
``saga_consumer_offsets`` from ``saga/store/tables.py``), so the same relay publishes a
service's outbox and several services can share one database (message ids are unique
across services; offsets are keyed by consumer group).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import MetaData, Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from saga.participant._records import OutgoingRecord
from saga.relay import OutboxRow
from saga.store import (
    OffsetCommit,
    claim_inbox_ids,
    delete_inbox_ids,
    insert_outbox,
    lock_schema,
    translate_errors,
)
from saga.store.tables import consumer_offsets, inbox, outbox, outbox_quarantine

PARTICIPANT_TABLES: tuple[Table, ...] = (inbox, outbox, outbox_quarantine, consumer_offsets)
"""The store tables a transactional participant needs in its database."""

translate_db_errors = translate_errors
"""The store's one mapping of database errors onto :mod:`saga.errors`."""


def participant_tables(metadata: MetaData | None = None) -> tuple[Table, ...]:
    """Return the inbox, outbox and consumer-offsets tables.

    Args:
        metadata: When given, copies of the tables are added to it, so a service's own
            ``metadata.create_all`` creates them together with its domain tables.
    """
    if metadata is None:
        return PARTICIPANT_TABLES
    return tuple(
        metadata.tables[t.name] if t.name in metadata.tables else t.to_metadata(metadata)
        for t in PARTICIPANT_TABLES
    )


async def create_participant_tables(engine: AsyncEngine) -> None:
    """Create the participant tables in ``engine``'s database if they do not exist."""
    with translate_db_errors("create participant tables"):
        async with engine.begin() as conn:
            await lock_schema(conn)  # replicas start at once
            await conn.run_sync(
                lambda sync_conn: inbox.metadata.create_all(
                    sync_conn, tables=list(PARTICIPANT_TABLES), checkfirst=True
                )
            )


async def claim_message_ids(conn: AsyncConnection, ids: Iterable[str]) -> set[str]:
    """Add the ids to the inbox in ``conn``'s transaction; returns those that were new.

    One statement checks and records them (:func:`saga.store.claim_inbox_ids`); rolled
    back with the transaction, they count as unseen again.
    """
    return await claim_inbox_ids(conn, list(ids), datetime.now(UTC))


async def seen_message_ids(conn: AsyncConnection, ids: Iterable[str]) -> set[str]:
    """Return which of ``ids`` are already in the inbox."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return set()
    rows = await conn.execute(select(inbox.c.message_id).where(inbox.c.message_id.in_(wanted)))
    return {str(r) for r in rows.scalars()}


async def prune_inbox(engine: AsyncEngine, older_than: datetime, limit: int) -> int:
    """Delete up to ``limit`` inbox ids received before ``older_than`` (one transaction).

    The same statement as the coordinator's store uses (:meth:`saga.store.SqlStore.prune_inbox`).

    Returns:
        How many ids were deleted.
    """
    with translate_db_errors("prune the inbox"):
        async with engine.begin() as conn:
            return await delete_inbox_ids(conn, older_than, limit)


async def write_outbox(
    conn: AsyncConnection,
    records: Sequence[OutgoingRecord],
    *,
    owner_topic: str,
    offsets: OffsetCommit | None = None,
    announce: bool = True,
) -> dict[int, list[OutboxRow]]:
    """Insert outgoing records into the outbox, in order (the relays publish by id).

    Each record goes to the lane ``(owner_topic, record.shard)``: the relay of the
    commands partition it answers publishes it; on PostgreSQL that relay is woken when
    the transaction commits (it also polls: a hint), unless ``announce`` is false (the
    caller offers the rows to the relay itself). ``offsets`` (the batch's next offsets,
    fenced) are stored too: in the same statement on PostgreSQL.

    Returns:
        ``shard -> rows`` as the relay of each lane reads them back, in id order (ids
        follow the order of ``records``).

    Raises:
        PartitionFenced: Another replica claimed a partition of ``offsets`` since.
    """
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "message_id": r.row_id,
            "topic": r.topic,
            "key": r.key,
            # Outbox headers are text; non-UTF-8 header bytes are replaced (lossy).
            "headers": [[k, v.decode("utf-8", errors="replace")] for k, v in r.headers],
            # A tombstone (None) cannot be stored; dead letters of one are empty bytes.
            "payload": r.value if r.value is not None else b"",
            "owner_topic": owner_topic,
            "shard": r.shard,
            "created_at": now,
        }
        for r in records
    ]
    ids = await insert_outbox(conn, rows, skip_existing=False, offsets=offsets, announce=announce)
    lanes: dict[int, list[OutboxRow]] = {}
    for r, row in zip(records, rows, strict=True):
        lanes.setdefault(r.shard, []).append(
            OutboxRow(
                id=ids[r.row_id],
                message_id=r.row_id,
                topic=r.topic,
                key=r.key,
                headers=[(k, v.encode()) for k, v in row["headers"]],
                payload=row["payload"],
            )
        )
    return lanes
