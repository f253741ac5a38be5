"""The inbox and the outbox, written by one batch.

Inbox ids and outbox message ids are unique keys, written with ``ON CONFLICT DO
NOTHING``: a replayed batch claims no id twice and enqueues no message twice. An
outbox id that is taken by a message for another topic or key is no replay but a
bug, and raises ``DuplicateMessage``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select

from saga.errors import DuplicateMessage
from saga.store import tables as t
from saga.store._errors import translate_errors
from saga.store._records import OutboxMessage
from saga.store._tx.bulk import any_of
from saga.store._tx.connection import TxConnection
from saga.store._tx.notify import notify_outbox


class MessageWrites(TxConnection):
    """Claiming and releasing inbox ids; appending to the outbox."""

    async def claim_message_ids(self, ids: Sequence[str]) -> list[str]:
        """Add message ids to the inbox; returns those that were new.

        The result keeps the given order, without repeats. One ``INSERT ... ON CONFLICT
        DO NOTHING RETURNING`` statement both checks and records them: rolled back with
        the transaction, the ids count as unseen again.
        """
        unique = list(dict.fromkeys(ids))
        if not unique:
            return []
        at = self.now()
        stmt = (
            self.insert(t.inbox)
            .on_conflict_do_nothing(index_elements=["message_id"])
            .returning(t.inbox.c.message_id)
        )
        with translate_errors("claim message ids", integrity=DuplicateMessage):
            result = await self.conn.execute(
                stmt, [{"message_id": i, "received_at": at} for i in unique]
            )
            new = set(result.scalars())
        return [i for i in unique if i in new]

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
        (:func:`notify_outbox`), delivered at commit.

        Raises:
            DuplicateMessage: The id is taken by a message for another topic or key.
        """
        unique: dict[str, OutboxMessage] = {}
        for m in messages:
            earlier = unique.setdefault(m.message_id, m)
            if (earlier.topic, earlier.key) != (m.topic, m.key):
                raise _not_a_duplicate(m.message_id)
        if not unique:
            return
        with translate_errors("enqueue", integrity=DuplicateMessage):
            at = self.now()
            stmt = (
                self.insert(t.outbox)
                .on_conflict_do_nothing(index_elements=["message_id"])
                .returning(t.outbox.c.message_id)
            )
            result = await self.conn.execute(
                stmt,
                [
                    {
                        "message_id": m.message_id,
                        "topic": m.topic,
                        "key": m.key,
                        "headers": [[k, v] for k, v in m.headers],
                        "payload": m.payload,
                        "owner_topic": m.owner_topic,
                        "shard": m.shard,
                        "created_at": at,
                        "published_at": None,
                    }
                    for m in unique.values()
                ],
            )
            inserted = set(result.scalars())
            # The ids skipped were stored already: fine if it is the same message again.
            await self._check_duplicates([m for i, m in unique.items() if i not in inserted])
            if self.postgres:
                written = {(m.owner_topic, m.shard) for i, m in unique.items() if i in inserted}
                await notify_outbox(self.conn, written - self._notified)
                self._notified |= written

    async def _check_duplicates(self, skipped: Sequence[OutboxMessage]) -> None:
        """Raise unless every skipped message matches the stored one's topic and key."""
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


def _not_a_duplicate(message_id: str) -> DuplicateMessage:
    return DuplicateMessage(
        f"outbox message id {message_id} is taken by a message for another topic or key",
        message_id=message_id,
    )
