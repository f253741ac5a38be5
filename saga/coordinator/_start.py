"""Starting a saga: one transaction that inserts the saga and its first commands.

A retried start with the same idempotency key returns the saga that the first start
created and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from contracts import new_message_id
from saga.coordinator._definitions import DefinitionCache
from saga.coordinator._writes import decision_writes
from saga.definition import SagaDefinition, validate_input
from saga.engine import StartSaga, transition
from saga.errors import DefinitionError, InvalidInput, NotReady
from saga.store import (
    AuditWrite,
    LockWrite,
    OutboxMessage,
    SagaStart,
    SagaWrite,
    SqlStore,
    StepExecutionWrite,
    TimerWrite,
)
from saga.telemetry import Telemetry
from saga.topics import Topics


@dataclass(frozen=True, kw_only=True)
class Started:
    """The result of :func:`start_saga`."""

    saga_id: UUID
    """The saga's id (the existing one when the idempotency key was seen before)."""
    created: bool
    """False when an earlier start with the same idempotency key created the saga."""


async def start_saga(
    store: SqlStore,
    definitions: DefinitionCache,
    topics: Topics,
    saga_type: str,
    saga_input: dict[str, Any],
    *,
    now: datetime,
    version: int | None = None,
    idempotency_key: str | None = None,
    correlation_id: UUID | None = None,
    saga_id: UUID | None = None,
    partitions: int | None = None,
    telemetry: Telemetry | None = None,
    extra_audit: Sequence[AuditWrite] = (),
) -> Started:
    """Start a saga of ``saga_type`` (latest version unless ``version`` is given).

    With ``telemetry``, the saga's root span ``saga <type>`` is emitted and the first
    commands carry trace headers (see :mod:`saga.telemetry`).

    ``partitions`` is the partition count of the replies topic (read from the database
    by :func:`replies_partitions` when not given; callers that start many sagas pass
    it): the saga's home partition decides which relay publishes its first commands.

    ``extra_audit`` records (e.g. who asked for the start) are appended to the new saga's
    audit chain in the same transaction; a retried start writes none of them.

    Raises:
        DefinitionError: No such saga type or version is registered.
        InvalidInput: The input fails the definition's input schema (``path`` names
            the field).
        NotReady: ``partitions`` is not given and no coordinator registered them yet.
    """
    if partitions is None:
        partitions = await replies_partitions(store, topics)
    prepared = prepare_start(
        await resolve_definition(definitions, saga_type, version),
        topics,
        saga_input,
        now=now,
        partitions=partitions,
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
        saga_id=saga_id,
        telemetry=telemetry,
    )
    saga_id_str, created = await store.start_saga(
        prepared.start(idempotency_key=idempotency_key, extra_audit=extra_audit)
    )
    if created:
        prepared.committed()
    return Started(saga_id=UUID(saga_id_str), created=created)


@dataclass(frozen=True, kw_only=True)
class PreparedStart:
    """The writes that start one saga, ready for a transaction (:func:`prepare_start`)."""

    definition: SagaDefinition
    saga: SagaWrite
    outbox: list[OutboxMessage]
    timers: list[TimerWrite]
    audit: list[AuditWrite]
    steps: list[StepExecutionWrite]
    locks: list[LockWrite]
    committed: Callable[[], None]
    """Call once the transaction committed (ends the saga's start span)."""

    def start(
        self, *, idempotency_key: str | None, extra_audit: Sequence[AuditWrite] = ()
    ) -> SagaStart:
        """What the store inserts, with ``extra_audit`` after the start's own records."""
        return SagaStart(
            saga=self.saga,
            outbox=self.outbox,
            timers=self.timers,
            audit=[*self.audit, *extra_audit],
            steps=self.steps,
            locks=self.locks,
            idempotency_key=idempotency_key,
        )


async def resolve_definition(
    definitions: DefinitionCache, saga_type: str, version: int | None = None
) -> SagaDefinition:
    """The definition a start asks for (the newest version unless ``version`` is given).

    Raises:
        DefinitionError: No such saga type or version is registered (``path``
            ``saga_type``).
    """
    definition = (
        await definitions.get(saga_type, version)
        if version is not None
        else await definitions.latest(saga_type)
    )
    if definition is None:
        what = f"{saga_type} v{version}" if version is not None else saga_type
        raise DefinitionError(f"unknown saga type {what}", path="saga_type")
    return definition


def prepare_start(
    definition: SagaDefinition,
    topics: Topics,
    saga_input: dict[str, Any],
    *,
    now: datetime,
    partitions: int,
    idempotency_key: str | None = None,
    correlation_id: UUID | None = None,
    saga_id: UUID | None = None,
    telemetry: Telemetry | None = None,
) -> PreparedStart:
    """Decide a saga's start (no I/O): check its input, run the engine, shape the writes.

    Raises:
        InvalidInput: The input fails the definition's input schema (``path`` names the
            field, e.g. ``input.lines[0].qty``), or the engine cannot start the saga
            with it (a mapping that finds nothing to read).
    """
    validate_input(definition.input_schema, saga_input, cache_key=definition.content_hash)
    sid = saga_id or new_message_id()
    event = StartSaga(
        saga_id=sid,
        input=saga_input,
        correlation_id=correlation_id or sid,
        idempotency_key=idempotency_key,
    )
    decision = transition(None, event, definition, now)
    if decision.state is None or decision.outcome != "applied":
        raise InvalidInput(decision.reason or "the saga could not start")
    writes = decision_writes(decision, before=None, topics=topics, now=now, partitions=partitions)
    observed = (telemetry or Telemetry.disabled()).observe_batch(now)
    writes.outbox = observed.decision(decision, writes.outbox, before=None)
    return PreparedStart(
        definition=definition,
        saga=writes.sagas[0],
        outbox=list(writes.outbox),
        timers=list(writes.timers_set),
        audit=list(writes.audit),
        steps=list(writes.steps),
        locks=list(writes.locks),
        committed=observed.committed,
    )


async def replies_partitions(store: SqlStore, topics: Topics) -> int:
    """The partition count of the replies topic, as the coordinators registered it.

    Raises:
        NotReady: No coordinator has started yet and `saga admin topics` never ran, so
            the partitions (and with them each saga's home partition) are unknown.
    """
    count = await store.partition_count(topics.replies)
    if count is None:
        raise NotReady(
            f"the partitions of {topics.replies} are not registered in the database yet;"
            " start a coordinator (`saga coordinator`) or run `saga admin topics` first"
        )
    return count
