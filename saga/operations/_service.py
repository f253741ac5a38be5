"""The verbs on sagas and definitions: :class:`SagaOperations`, over one store.

Reads come from the store as they are. Everything else but a start is delivered: one
transaction writes the verb's message to the outbox (for the coordinator that owns the
saga) and an ``operator.requested`` audit record, after a dry run refused what the
engine would refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from contracts import Envelope, MessageKind, Signal, new_message_id
from saga.coordinator import (
    DefinitionCache,
    control_message,
    replies_partitions,
    shard_of,
    start_saga,
)
from saga.definition import SagaDefinition, definition_to_dict, to_mermaid
from saga.engine import Event, SagaState, SagaStatus, SignalReceived
from saga.errors import DefinitionNotFound, SagaNotFound, StoreError
from saga.lifecycle import Clock, utc_now
from saga.operations._cursor import decode_cursor, encode_cursor
from saga.operations._verbs import REQUESTED, Verb, dry_run, operator_event
from saga.operations._views import (
    Accepted,
    AuditRecordView,
    DefinitionDetail,
    DefinitionSummary,
    LockView,
    SagaDetail,
    SagaPage,
    SagaSummary,
    StartResult,
    StepExecutionView,
    StepView,
    open_error,
    summary_of,
)
from saga.store import AuditWrite, OutboxMessage, SqlStore, verify_chain
from saga.telemetry import Telemetry
from saga.topics import Topics


class SagaOperations:
    """The verbs on sagas and definitions, over one store.

    Args:
        store: The saga store.
        definitions: Definitions cache over the same store.
        topics: Topic names of the deployment.
        clock: Returns the current time (UTC); tests pass their own.
    """

    def __init__(
        self,
        store: SqlStore,
        definitions: DefinitionCache,
        topics: Topics,
        *,
        clock: Clock = utc_now,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.store = store
        self.definitions = definitions
        self.topics = topics
        self.clock = clock
        self._partitions: int | None = None

    # -- start ---------------------------------------------------------------------------

    async def start(
        self,
        saga_type: str,
        saga_input: dict[str, Any],
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
        correlation_id: UUID | None = None,
        actor: str | None = None,
    ) -> StartResult:
        """Start a saga of ``saga_type`` (the latest version unless ``version`` is given).

        When ``actor`` is given, a new saga's timeline also records who started it (an
        ``operator.requested`` record with verb ``start``, in the same transaction).

        Raises:
            DefinitionNotFound: No such saga type (or version) is registered.
            saga.errors.DefinitionError: The input does not let the saga start.
        """
        await self._definition(saga_type, version)
        saga_id = new_message_id()
        requested = (
            AuditWrite(
                saga_id=str(saga_id),
                kind=REQUESTED,
                actor=actor,
                detail={"verb": str(Verb.START), "idempotency_key": idempotency_key},
                recorded_at=self.clock(),
            )
            if actor is not None
            else None
        )
        started = await start_saga(
            self.store,
            self.definitions,
            self.topics,
            saga_type,
            saga_input,
            now=self.clock(),
            version=version,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            partitions=await self.partitions(),
            telemetry=self.telemetry,
            saga_id=saga_id,
            extra_audit=[requested] if requested is not None else (),
        )
        return StartResult(saga_id=started.saga_id, created=started.created)

    # -- read ----------------------------------------------------------------------------

    async def _lock(self, state: SagaState) -> LockView | None:
        if state.lock_key is None:
            return None
        holder, position = await self.store.lock_state(state.lock_key, str(state.saga_id))
        return LockView(key=state.lock_key, holder=holder, position=position)

    async def get_saga(self, saga_id: UUID) -> SagaDetail:
        """Everything about one saga.

        Raises:
            SagaNotFound: No saga has that id.
        """
        state = await self._state(saga_id)
        definition = await self.definitions.get(state.saga_type, state.saga_version)
        spec = definition.steps if definition else ()
        kinds = {s.name: str(s.kind) for s in spec}
        # Definition order: the stored state's JSON object may come back in any key order.
        order = {s.name: i for i, s in enumerate(spec)}
        executions: dict[str, list[StepExecutionView]] = {}
        for row in await self.store.step_executions(str(saga_id)):
            executions.setdefault(row.step, []).append(
                StepExecutionView(
                    attempt=row.attempt,
                    kind=row.kind,
                    status=row.status,
                    started_at=row.started_at,
                    finished_at=row.finished_at,
                    error_code=row.error_code,
                    error_message=row.error_message,
                )
            )
        steps = [
            StepView(
                name=name,
                kind=kinds.get(name, "unknown"),
                status=str(st.status),
                attempt=st.attempt,
                compensation=str(st.compensation),
                compensation_attempt=st.compensation_attempt,
                last_error=open_error(st),
                started_at=st.started_at,
                finished_at=st.finished_at,
                executions=executions.get(name, []),
            )
            for name, st in sorted(state.steps.items(), key=lambda kv: order.get(kv[0], 1 << 30))
        ]
        records = await self.store.audit_trail(str(saga_id))
        timeline = [
            AuditRecordView(
                seq=r.seq,
                recorded_at=r.recorded_at,
                kind=r.kind,
                step=r.step,
                attempt=r.attempt,
                actor=r.actor,
                detail=dict(r.detail),
                hash=r.hash,
            )
            for r in records
        ]
        return SagaDetail(
            **summary_of(state).model_dump(),
            revision=state.revision,
            context=state.context,
            idempotency_key=state.idempotency_key,
            deadline_at=state.deadline_at,
            stuck_step=state.stuck_step,
            stuck_in=state.stuck_in,
            last_error=state.last_error,
            failure=state.failure,
            abort_reason=state.abort_reason,
            steps=steps,
            timeline=timeline,
            timeline_intact=not verify_chain(records),
            lock=await self._lock(state),
        )

    async def list_sagas(
        self,
        *,
        saga_type: str | None = None,
        status: SagaStatus | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> SagaPage:
        """One page of sagas, newest first, filtered by type, status and creation time.

        Raises:
            ValueError: ``cursor`` is not one :meth:`list_sagas` handed out.
        """
        rows, next_cursor = await self.store.list_sagas(
            saga_type=saga_type,
            status=str(status) if status is not None else None,
            created_from=created_from,
            created_to=created_to,
            limit=limit,
            cursor=decode_cursor(cursor) if cursor is not None else None,
        )
        items = [
            SagaSummary(
                saga_id=UUID(row.saga_id),
                saga_type=row.saga_type,
                saga_version=row.saga_version,
                status=SagaStatus(row.status),
                correlation_id=UUID(row.correlation_id) if row.correlation_id else None,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
            for row in rows
        ]
        return SagaPage(
            items=items,
            next_cursor=encode_cursor(next_cursor) if next_cursor is not None else None,
        )

    async def list_definitions(self) -> list[DefinitionSummary]:
        """Every registered definition, by name then version."""
        pairs = await self.store.list_definitions()
        return [DefinitionSummary(name=n, version=v) for n, v in sorted(pairs)]

    async def get_definition(self, name: str, version: int) -> DefinitionDetail:
        """One registered definition with a Mermaid graph.

        Raises:
            DefinitionNotFound: No definition ``name`` at ``version`` is registered.
        """
        d = await self._definition(name, version)
        return DefinitionDetail(
            name=d.name,
            version=d.version,
            content_hash=d.content_hash,
            description=d.description,
            definition=definition_to_dict(d),
            mermaid=to_mermaid(d),
        )

    # -- delivered commands --------------------------------------------------------------

    async def signal(
        self, saga_id: UUID, name: str, data: dict[str, Any], *, actor: str
    ) -> Accepted:
        """Deliver the signal ``name`` (with ``data``) to a saga.

        Raises:
            SagaNotFound: No saga has that id.
            InvalidCommand: No step of the saga waits for a signal called ``name``.
            TransitionError: The saga cannot take the signal now (e.g. it has finished).
        """
        message_id = new_message_id()
        partitions = await self.partitions()

        def message(state: SagaState, now: datetime) -> OutboxMessage:
            envelope = Envelope(
                message_id=message_id,
                saga_id=saga_id,
                saga_type=state.saga_type,
                saga_version=state.saga_version,
                kind=MessageKind.SIGNAL,
                type="signal",
                payload=Signal(name=name, data=data).model_dump(mode="json"),
                correlation_id=state.correlation_id,
                occurred_at=now,
            )
            return OutboxMessage(
                message_id=str(message_id),
                topic=self.topics.replies,
                key=str(saga_id).encode(),
                headers=[],
                payload=envelope.to_bytes(),
                owner_topic=self.topics.replies,
                shard=shard_of(saga_id, partitions),
            )

        await self._deliver(
            saga_id,
            Verb.SIGNAL,
            SignalReceived(name=name, data=data),
            message,
            actor=actor,
            reason="",
            detail={"signal": name},
        )
        return Accepted(saga_id=saga_id, verb=Verb.SIGNAL, message_id=message_id)

    async def command(
        self,
        saga_id: UUID,
        verb: Verb,
        *,
        reason: str,
        actor: str,
        step: str | None = None,
    ) -> Accepted:
        """Deliver an operator command (abort, retry/skip a step, mark compensated, resume).

        Raises:
            ValueError: ``verb`` is ``signal``, or ``step`` is missing/extra for the verb.
            SagaNotFound: No saga has that id.
            InvalidCommand: The command names something the definition does not have.
            TransitionError: The command is illegal in the saga's state.
        """
        event = operator_event(verb, reason=reason, actor=actor, step=step)
        message_id = new_message_id()
        partitions = await self.partitions()

        def message(state: SagaState, now: datetime) -> OutboxMessage:
            return control_message(
                event,
                saga_id=saga_id,
                message_id=message_id,
                shard=shard_of(saga_id, partitions),
                topics=self.topics,
                now=now,
            )

        await self._deliver(saga_id, verb, event, message, actor=actor, reason=reason)
        return Accepted(saga_id=saga_id, verb=verb, message_id=message_id)

    # -- helpers -------------------------------------------------------------------------

    async def partitions(self) -> int:
        """The replies topic's partition count (read once, then remembered).

        Raises:
            saga.errors.NotReady: No coordinator has registered the partitions yet.
        """
        if self._partitions is None:
            self._partitions = await replies_partitions(self.store, self.topics)
        return self._partitions

    async def _definition(self, name: str, version: int | None) -> SagaDefinition:
        found = (
            await self.definitions.get(name, version)
            if version is not None
            else await self.definitions.latest(name)
        )
        if found is None:
            what = f"{name!r} version {version}" if version is not None else repr(name)
            raise DefinitionNotFound(f"no saga definition {what} is registered")
        return found

    async def _state(self, saga_id: UUID) -> SagaState:
        row = await self.store.get_saga(str(saga_id))
        if row is None:
            raise SagaNotFound(f"no saga with id {saga_id}", saga_id=str(saga_id))
        return SagaState.model_validate_json(row.state_json)

    async def _deliver(
        self,
        saga_id: UUID,
        verb: Verb,
        event: Event,
        message: Callable[[SagaState, datetime], OutboxMessage],
        *,
        actor: str,
        reason: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Validate ``event`` against the saga and write its message, in ONE transaction.

        The saga row is locked first (``FOR UPDATE`` on PostgreSQL), like the coordinator
        does, so the ``operator.requested`` record and the coordinator's own audit records
        never race for the same place in the saga's hash chain.
        """
        sid = str(saga_id)
        step = getattr(event, "step", None)
        # Resolve the definition before the transaction: on SQLite every connection takes
        # the write lock, so a cache miss inside it would wait for itself.
        known = await self._state(saga_id)
        definition = await self.definitions.get(known.saga_type, known.saga_version)
        if definition is None:
            raise StoreError(
                f"saga {sid} runs {known.saga_type} v{known.saga_version}, which is not registered",
                saga_id=sid,
            )
        async with self.store.transaction() as tx:
            rows = await tx.load_sagas_for_update([sid])
            if sid not in rows:
                raise SagaNotFound(f"no saga with id {saga_id}", saga_id=sid)
            state = SagaState.model_validate_json(rows[sid].state_json)
            now = self.clock()
            dry_run(state, definition, event, now)
            outgoing = message(state, now)
            audit = AuditWrite(
                saga_id=sid,
                kind=REQUESTED,
                step=step,
                attempt=None,
                actor=actor,
                detail={
                    "verb": str(verb),
                    "reason": reason,
                    "message_id": outgoing.message_id,
                    **(detail or {}),
                },
                recorded_at=now,
            )
            await tx.enqueue([outgoing])
            await tx.append_audit([audit])
