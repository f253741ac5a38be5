"""The inbox and the outbox, written by one batch.

Inbox ids and outbox message ids are unique keys, written with ``ON CONFLICT DO
NOTHING``: a replayed batch claims no id twice and enqueues no message twice. An
outbox id that is taken by a message for another topic or key is no replay but a
bug, and raises ``DuplicateMessage``.

:func:`claim_inbox_ids` and :func:`insert_outbox` are the one way to write these tables,
for the coordinator's store and for participants (whose inbox and outbox are the same
tables in their own database). On PostgreSQL each is ONE statement over arrays, whose
SQL text is the same for any batch size; the outbox insert also wakes the relays of
the lanes it wrote (``pg_notify`` in the same statement), so enqueueing costs one round
trip, not two.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from saga.errors import DuplicateMessage
from saga.store import tables as t
from saga.store._errors import translate_errors
from saga.store._leases import OffsetCommit, store_offsets
from saga.store._records import OutboxMessage
from saga.store._tx.bulk import any_of, rows_insert, rows_params
from saga.store._tx.combined import Part, write_combined
from saga.store._tx.connection import TxConnection
from saga.store._tx.notify import outbox_written_and_notified

_INBOX_COLUMNS = ("message_id", "received_at")


async def claim_inbox_ids(conn: AsyncConnection, ids: Sequence[str], at: datetime) -> set[str]:
    """Add message ids to the inbox in the caller's transaction; returns those that were new.

    One ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` both checks and records them:
    rolled back with the transaction, the ids count as unseen again.
    """
    unique = list(dict.fromkeys(ids))
    if not unique:
        return set()
    postgres = conn.dialect.name == "postgresql"
    rows = [{"message_id": i, "received_at": at} for i in unique]
    result = await conn.execute(
        _claim_statement(postgres=postgres),
        rows_params(t.inbox, _INBOX_COLUMNS, rows, postgres=postgres),
    )
    return {str(i) for i in result.scalars()}


async def insert_outbox(
    conn: AsyncConnection,
    rows: Sequence[Mapping[str, Any]],
    *,
    skip_existing: bool,
    offsets: OffsetCommit | None = None,
    announce: bool = True,
) -> dict[str, int]:
    """Append rows to the outbox in the caller's transaction; ids follow the given order.

    ``rows`` hold the ``saga_outbox`` columns (``published_at`` unset). On PostgreSQL
    the relay of each written ``(owner_topic, shard)`` lane is woken when the
    transaction commits, by the same statement, unless ``announce`` is false (a writer
    that hands the rows to its lane's relay itself, see ``Relay.offer``). With
    ``skip_existing`` a message id that is stored already is skipped (``ON CONFLICT DO
    NOTHING``); without it, it fails the statement. ``offsets`` are stored too, fenced
    (in the same statement on PostgreSQL).

    Returns:
        ``message id -> outbox id`` of the rows inserted.

    Raises:
        DuplicateMessage: Without ``skip_existing``: a message id is stored already.
        PartitionFenced: Another member claimed a partition of ``offsets`` since.
    """
    postgres = conn.dialect.name == "postgresql"
    if offsets is not None:
        if not postgres:
            inserted = await insert_outbox(conn, rows, skip_existing=skip_existing)
            await store_offsets(conn, offsets)
            return inserted
        combined = await write_combined(conn, [Part.of("outbox", rows)], offsets, announce=announce)
        written = dict(
            zip(
                (str(i) for i in combined.get("outbox_ids") or ()),
                combined.get("outbox_row_ids") or (),
                strict=True,
            )
        )
        if not skip_existing and len(written) < len(rows):
            taken = next(str(r["message_id"]) for r in rows if r["message_id"] not in written)
            raise _not_a_duplicate(taken)
        return written
    if not rows:
        return {}
    names = tuple(rows[0])
    result = await conn.execute(
        _outbox_statement(names, skip_existing=skip_existing, postgres=postgres, announce=announce),
        rows_params(t.outbox, names, rows, postgres=postgres),
    )
    return {str(r.message_id): int(r.id) for r in result}


@functools.cache
def _claim_statement(*, postgres: bool) -> Any:
    """Insert the ids that are new, return them (built once per backend)."""
    return (
        rows_insert(t.inbox, _INBOX_COLUMNS, postgres=postgres)
        .on_conflict_do_nothing(index_elements=["message_id"])
        .returning(t.inbox.c.message_id)
    )


@functools.cache
def _outbox_statement(
    names: tuple[str, ...], *, skip_existing: bool, postgres: bool, announce: bool
) -> Any:
    """Insert outbox rows and return their message ids and ids (built once per variant).

    On PostgreSQL the same statement notifies the lanes it wrote, if it is to ``announce``.
    """
    c = t.outbox.c
    stmt = rows_insert(t.outbox, names, postgres=postgres)
    if skip_existing:
        stmt = stmt.on_conflict_do_nothing(index_elements=["message_id"])
    if not postgres or not announce:
        return stmt.returning(c.message_id, c.id)
    written, notified = outbox_written_and_notified(stmt, "written")
    return select(written.c.message_id, written.c.id, notified.label("notified"))


class MessageWrites(TxConnection):
    """Claiming and releasing inbox ids; appending to the outbox."""

    async def claim_message_ids(self, ids: Sequence[str]) -> list[str]:
        """Add message ids to the inbox; returns those that were new.

        The result keeps the given order, without repeats (see :func:`claim_inbox_ids`).
        """
        with translate_errors("claim message ids", integrity=DuplicateMessage):
            new = await claim_inbox_ids(self.conn, ids, self.now())
        return [i for i in dict.fromkeys(ids) if i in new]

    async def release_message_ids(self, ids: Sequence[str]) -> None:
        """Take message ids out of the inbox again (messages this batch dead-lettered).

        A dead letter that is replayed after its cause was fixed (a definition deployed,
        a saga restored) must not be taken for a duplicate. A redelivery of the record
        itself is harmless: its dead letter has a deterministic id and is written once.
        """
        if not ids:
            return
        with translate_errors("release message ids"):
            for cond in any_of(t.inbox.c.message_id, list(ids), postgres=self.postgres):
                await self.conn.execute(delete(t.inbox).where(cond))

    async def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        """Append messages to the outbox; ids are assigned in the given order.

        A message id that is stored already (or repeated in ``messages``) with the same
        topic and key is a real duplicate (a replayed timer or dead letter) and is
        skipped. On PostgreSQL the relay of each written ``(owner_topic, shard)`` is woken
        (see :func:`insert_outbox`), delivered at commit.

        Raises:
            DuplicateMessage: The id is taken by a message for another topic or key.
        """
        unique = unique_messages(messages)
        if not unique:
            return
        with translate_errors("enqueue", integrity=DuplicateMessage):
            inserted = await insert_outbox(
                self.conn, self.outbox_rows(unique.values()), skip_existing=True
            )
            await self.check_skipped(unique, inserted)

    def outbox_rows(self, messages: Iterable[OutboxMessage]) -> list[dict[str, Any]]:
        """The ``saga_outbox`` rows of ``messages``, created now."""
        at = self.now()
        return [
            {
                "message_id": m.message_id,
                "topic": m.topic,
                "key": m.key,
                "headers": [[k, v] for k, v in m.headers],
                "payload": m.payload,
                "owner_topic": m.owner_topic,
                "shard": m.shard,
                "created_at": at,
            }
            for m in messages
        ]

    async def check_skipped(
        self, unique: Mapping[str, OutboxMessage], inserted: Collection[str]
    ) -> None:
        """The ids not inserted were stored already: fine if it is the same message again.

        Raises:
            DuplicateMessage: The id is taken by a message for another topic or key.
        """
        skipped = [m for i, m in unique.items() if i not in inserted]
        if not skipped:
            return
        wanted = {m.message_id: m for m in skipped}
        for cond in any_of(t.outbox.c.message_id, list(wanted), postgres=self.postgres):
            rows = await self.conn.execute(
                select(t.outbox.c.message_id, t.outbox.c.topic, t.outbox.c.key).where(cond)
            )
            for r in rows:
                m = wanted[r.message_id]
                stored_key = bytes(r.key) if r.key is not None else None
                if (r.topic, stored_key) != (m.topic, m.key):
                    raise _not_a_duplicate(m.message_id)


def unique_messages(messages: Sequence[OutboxMessage]) -> dict[str, OutboxMessage]:
    """``message_id -> message``, each id once.

    A repeat with the same topic and key is a real duplicate (a replayed timer or dead
    letter) and is dropped.

    Raises:
        DuplicateMessage: An id repeats with another topic or key.
    """
    unique: dict[str, OutboxMessage] = {}
    for m in messages:
        earlier = unique.setdefault(m.message_id, m)
        if (earlier.topic, earlier.key) != (m.topic, m.key):
            raise _not_a_duplicate(m.message_id)
    return unique


def _not_a_duplicate(message_id: str) -> DuplicateMessage:
    return DuplicateMessage(
        f"outbox message id {message_id} is taken by a message for another topic or key",
        message_id=message_id,
    )
