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
what spans them: starting a saga, committing consumer offsets, and
:meth:`SqlTransaction.write_batch`, which on PostgreSQL sends all of a batch's writes
and its offsets as ONE statement (``combined``): a coordinator batch is five round
trips (``BEGIN``, inbox claim, locked load, writes, ``COMMIT``) instead of twelve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from sqlalchemy import or_, select

from saga.errors import ConcurrencyConflict, DuplicateMessage
from saga.store import _leases
from saga.store import tables as t
from saga.store._errors import translate_errors
from saga.store._leases import OffsetCommit
from saga.store._records import (
    AuditWrite,
    LockWrite,
    OutboxMessage,
    SagaStart,
    SagaWrite,
    StepExecutionWrite,
    TimerKey,
    TimerWrite,
)
from saga.store._tx.audit import AuditWrites
from saga.store._tx.combined import Part, write_combined
from saga.store._tx.locks import LockQueues
from saga.store._tx.messages import MessageWrites, unique_messages
from saga.store._tx.sagas import SagaWrites, saga_values, step_rows, update_rows
from saga.store._tx.timers import TimerWrites, not_set_again, timer_key_rows


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

    async def write_batch(
        self,
        *,
        sagas: Sequence[SagaWrite] = (),
        steps: Sequence[StepExecutionWrite] = (),
        outbox: Sequence[OutboxMessage] = (),
        timers_cancelled: Sequence[TimerKey] = (),
        timers_set: Sequence[TimerWrite] = (),
        audit: Sequence[AuditWrite] = (),
        locks: Sequence[LockWrite] = (),
        offsets: OffsetCommit | None = None,
    ) -> None:
        """Write what a batch decided: sagas, step executions, outbox, timers, audit, locks.

        The same as :meth:`save_sagas`, :meth:`record_steps`, :meth:`enqueue`,
        :meth:`cancel_timers`, :meth:`set_timers`, :meth:`append_audit`,
        :meth:`apply_locks` and :meth:`commit_offsets` (of ``offsets``) in this order (a
        timer cancelled and set again is set), but on PostgreSQL all of them except the
        locks are ONE statement (:mod:`saga.store._tx.combined`).

        Raises:
            ConcurrencyConflict: A saga's stored revision is not the expected one, or a
                new saga exists already.
            SagaNotFound: A saga to update does not exist.
            DuplicateMessage: An outbox message id is taken by another topic or key.
            PartitionFenced: Another member claimed a partition of ``offsets`` since.
        """
        new = [w for w in sagas if w.expected_revision is None]
        updated = [w.saga_id for w in sagas if w.expected_revision is not None]
        if (
            not self.postgres
            or len(set(updated)) < len(updated)
            or set(updated) & {w.saga_id for w in new}
        ):
            # SQLite (nothing to gain), or a saga written twice by one call (the CTEs of
            # one statement do not see each other's rows): a statement per table.
            await self.save_sagas(sagas)
            await self.record_steps(steps)
            await self.enqueue(outbox)
            await self.cancel_timers(timers_cancelled)
            await self.set_timers(timers_set)
            await self.append_audit(audit)
            await self.apply_locks(locks)
            if offsets is not None:
                with translate_errors("store offsets"):
                    await _leases.store_offsets(self.conn, offsets)
            return
        updates = await self.checked_updates(sagas)
        unique = unique_messages(outbox)
        to_set = self.timers_to_set(timers_set)
        cancelled = not_set_again(timer_key_rows(timers_cancelled), to_set)
        # New sagas have no audit chain yet, and no other writer sees them before commit.
        for w in new:
            self._locked[w.saga_id] = w.revision
            self._audit_heads[w.saga_id] = None
        parts = [
            Part.of("sagas_new", [saga_values(w) for w in new]),
            Part.of("sagas", update_rows(updates)),
            Part.of("steps", step_rows(steps)),
            Part.of("outbox", self.outbox_rows(unique.values())),
            Part.of("timers_cancelled", cancelled),
            Part.of("timers_set", to_set),
            Part.of("audit", await self.audit_rows(audit)),
        ]
        with translate_errors("write a batch", integrity=ConcurrencyConflict):
            result = await write_combined(self.conn, parts, offsets)
        if unique:
            with translate_errors("enqueue", integrity=DuplicateMessage):
                await self.check_skipped(unique, set(result.get("outbox_ids") or ()))
        await self.apply_locks(locks)

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
