"""The store's ports: what the coordinator, timers, relay and API need.

:class:`SqlStore` implements them on SQLite and PostgreSQL; the contract suite in
``tests/contract/store_contract.py`` pins every implementation (including a future
in-memory double) to the same behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from saga.store._leases import OffsetCommit
from saga.store._records import (
    AuditRecord,
    AuditWrite,
    LockWrite,
    OutboxMessage,
    SagaRow,
    SagaStart,
    SagaWrite,
    StepExecutionRow,
    StepExecutionWrite,
    TimerKey,
    TimerRow,
    TimerWrite,
)

Cursor = tuple[datetime, str]
"""A keyset position of :meth:`SagaStore.list_sagas`: ``(created_at, saga_id)``."""


class StoreTransaction(Protocol):
    """The statements of one batch, all inside ONE database transaction.

    Every method is one (or a few) bulk statements. An exception raised out of the
    ``async with store.transaction()`` block rolls everything back.
    """

    async def claim_message_ids(self, ids: Sequence[str]) -> list[str]:
        """Add message ids to the inbox; returns the new ones (given order, no repeats)."""
        ...

    async def load_sagas_for_update(self, saga_ids: Sequence[str]) -> dict[str, SagaRow]:
        """Load (and, where the backend can, lock) sagas in id order; missing ids are absent."""
        ...

    async def save_sagas(self, writes: Sequence[SagaWrite]) -> None:
        """Insert new sagas and update existing ones if their revision is the expected one.

        Raises:
            saga.errors.ConcurrencyConflict: A saga's stored revision is not the expected
                one, or a new saga's id or idempotency key exists already.
            saga.errors.SagaNotFound: A saga to update does not exist.
        """
        ...

    async def record_steps(self, writes: Sequence[StepExecutionWrite]) -> None:
        """Upsert step executions on ``(saga_id, step, attempt, kind)``."""
        ...

    async def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        """Append messages to the outbox in the given order.

        Raises:
            saga.errors.DuplicateMessage: A message id is stored already for another
                topic or key (the same id, topic and key again is skipped).
        """
        ...

    async def release_message_ids(self, ids: Sequence[str]) -> None:
        """Take message ids out of the inbox again (messages dead-lettered)."""
        ...

    async def apply_locks(self, writes: Sequence[LockWrite]) -> list[str]:
        """Join or leave lock queues; grant free keys (``lock_granted`` timers)."""
        ...

    async def set_timers(self, timers: Sequence[TimerWrite]) -> None:
        """Set timers; an existing natural key gets the new due time."""
        ...

    async def cancel_timers(self, keys: Sequence[TimerKey]) -> None:
        """Delete timers by natural key (missing ones are ignored)."""
        ...

    async def append_audit(self, writes: Sequence[AuditWrite]) -> None:
        """Append records to each saga's hash chain, in the given order."""
        ...

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
        """All the writes of a batch at once, its offsets too (one statement on PostgreSQL)."""
        ...

    async def commit_offsets(
        self,
        group_id: str,
        topic: str,
        offsets: Mapping[int, int],
        epochs: Mapping[int, int],
    ) -> None:
        """Store the next offset per partition, only where ``epochs`` still own it.

        Raises:
            saga.errors.PartitionFenced: A partition was claimed by another member.
        """
        ...


class SagaStore(Protocol):
    """The saga store as its users see it."""

    def transaction(self) -> AbstractAsyncContextManager[StoreTransaction]:
        """One database transaction (``BEGIN IMMEDIATE`` on SQLite); commit on success."""
        ...

    async def partition_count(self, topic: str) -> int | None:
        """How many partitions of ``topic`` are registered (``None``: none yet)."""
        ...

    async def register_partitions(self, group_id: str, topic: str, partitions: int) -> None:
        """Record that ``topic`` has ``partitions`` partitions, consumed by ``group_id``."""
        ...

    async def register_definition(
        self, name: str, version: int, content_hash: str, body: dict[str, Any]
    ) -> None:
        """Register a definition; the same hash again is a no-op.

        Raises:
            saga.errors.DefinitionConflict: Another hash is registered for name and version.
        """
        ...

    async def load_definition(self, name: str, version: int) -> tuple[str, dict[str, Any]] | None:
        """``(content_hash, body)`` of a registered definition, or ``None``."""
        ...

    async def list_definitions(self) -> list[tuple[str, int]]:
        """``(name, version)`` of every registered definition, sorted."""
        ...

    async def start_saga(self, start: SagaStart) -> tuple[str, bool]:
        """Insert a new saga and its first writes in one transaction: ``(saga_id, created)``."""
        ...

    async def get_saga(self, saga_id: str) -> SagaRow | None:
        """One saga, or ``None``."""
        ...

    async def list_sagas(
        self,
        *,
        saga_type: str | None = None,
        status: str | Sequence[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int = 50,
        cursor: Cursor | None = None,
    ) -> tuple[list[SagaRow], Cursor | None]:
        """One page of sagas, newest first, and the cursor of the next page."""
        ...

    async def sagas_with_deferred(self, participant: str, *, limit: int = 1000) -> list[str]:
        """Ids of unfinished sagas holding work deferred for a paused ``participant``."""
        ...

    async def step_executions(self, saga_id: str) -> list[StepExecutionRow]:
        """Every step attempt of a saga, in the order they were first recorded."""
        ...

    async def audit_trail(self, saga_id: str) -> list[AuditRecord]:
        """A saga's audit records in chain order."""
        ...

    async def claim_due_timers(
        self, now: datetime, limit: int, to_message: Callable[[TimerRow], OutboxMessage]
    ) -> int:
        """Fire up to ``limit`` due timers into the outbox (each exactly once); how many."""
        ...

    async def next_timer_due(self) -> datetime | None:
        """When the earliest timer is due (``None``: no timers)."""
        ...

    async def outbox_backlog(self) -> int:
        """How many outbox rows are not published yet."""
        ...

    async def prune_published_outbox(self, older_than: datetime, limit: int) -> int:
        """Delete up to ``limit`` outbox rows published before ``older_than``."""
        ...

    async def prune_inbox(self, older_than: datetime, limit: int) -> int:
        """Delete up to ``limit`` inbox ids received before ``older_than``."""
        ...
