"""The statements of one coordinator batch, inside one database transaction.

Theory of operation
-------------------
:meth:`saga.store.SqlStore.transaction` opens the transaction (``BEGIN IMMEDIATE`` on
SQLite, so the write lock is taken up front; ``READ COMMITTED`` plus row locks on
PostgreSQL) and yields a :class:`SqlTransaction`. Each method is one or a few bulk
statements (``executemany`` / multi-row ``INSERT``), never a statement per ORM object.

Idempotency lives in the schema: inbox ids, outbox message ids, step
executions ``(saga, step, attempt, kind)``, timers ``(saga, kind, step, attempt)`` and
offsets ``(group, topic, partition)`` are unique keys, written with ``ON CONFLICT``
so a replayed batch writes nothing twice. Saga rows carry a revision: an update names
the revision it was computed from and fails with ``ConcurrencyConflict`` when the
stored one differs (a guard behind the row locks; it is what catches a writer that
skipped :meth:`SqlTransaction.load_sagas_for_update`).

Rows written by one call with the same natural key are merged first: PostgreSQL
refuses an ``ON CONFLICT DO UPDATE`` that touches one row twice in one statement.

The statements are grouped by the tables they write, one mixin module each:
``sagas`` (saga rows, step executions), ``messages`` (inbox, outbox), ``timers``,
``audit`` and ``locks``, over the shared ``connection``; ``bulk`` and ``notify``
hold the statement helpers. :class:`SqlTransaction` puts them together and adds
what spans them: starting a saga and committing consumer offsets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from sqlalchemy import or_, select

from saga.errors import DuplicateMessage
from saga.store import _leases
from saga.store import tables as t
from saga.store._errors import translate_errors
from saga.store._records import SagaStart
from saga.store._tx.audit import AuditWrites
from saga.store._tx.locks import LockQueues
from saga.store._tx.messages import MessageWrites
from saga.store._tx.sagas import SagaWrites
from saga.store._tx.timers import TimerWrites


class SqlTransaction(LockQueues, SagaWrites, MessageWrites, TimerWrites, AuditWrites):
    """The statements of one batch, all inside one database transaction.

    Get one from :meth:`saga.store.SqlStore.transaction`; do not keep it after the
    ``async with`` block. ``conn`` is the underlying connection, for the store's own
    helpers and tests.
    """

    async def start_saga(self, start: SagaStart) -> tuple[str, bool]:
        """Insert a new saga and its first writes, unless a saga has the key already.

        Returns:
            ``(saga_id, created)``: the existing saga's id and ``False`` when a saga was
            started with the same idempotency key before (then nothing is written).

        Raises:
            DuplicateMessage: A saga with this id exists (and the key does not match one).
            ConcurrencyConflict: A concurrent start with the same key committed first.
        """
        saga, key = start.saga, start.key
        sagas = t.sagas.c
        with translate_errors("start saga", saga_id=saga.saga_id):
            cond = sagas.id == saga.saga_id
            if key is not None:
                cond = or_(cond, sagas.idempotency_key == key)
            found = (
                await self.conn.execute(select(sagas.id, sagas.idempotency_key).where(cond))
            ).all()
        for row in found:
            if key is not None and row.idempotency_key == key:
                return str(row.id), False
        if found:
            raise DuplicateMessage(f"saga {saga.saga_id} exists already", saga_id=saga.saga_id)
        if saga.idempotency_key != key:
            saga = replace(saga, idempotency_key=key)
        await self.insert_sagas([saga])
        await self.record_steps(start.steps)
        await self.enqueue(start.outbox)
        await self.set_timers(start.timers)
        await self.append_audit(start.audit)
        await self.apply_locks(start.locks)
        return saga.saga_id, True

    # -- offsets -------------------------------------------------------------------------

    async def commit_offsets(
        self,
        group_id: str,
        topic: str,
        offsets: Mapping[int, int],
        epochs: Mapping[int, int],
    ) -> None:
        """Store the next offsets of ``topic``'s partitions, fenced by the owner epochs.

        Raises:
            PartitionFenced: Another member claimed a partition since (see
                :func:`saga.store.commit_offsets`); roll the transaction back.
        """
        with translate_errors("store offsets"):
            await _leases.commit_offsets(self.conn, group_id, topic, offsets, epochs)
