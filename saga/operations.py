"""What a person or a program can do to sagas: one function per verb, shared by API and CLI.

The HTTP handlers (``saga.api``) and the ``saga`` CLI verbs call the same
:class:`SagaOperations` methods, so there is one way of doing each thing.

Theory of operation
-------------------
Every state change of a saga is made by the coordinator that owns its Kafka partition.
Starting a saga is the one exception: the saga does not exist yet, so
:meth:`SagaOperations.start` inserts it with its first commands in one transaction
(:func:`saga.coordinator.start_saga`). Signals, abort and the operator verbs are
*delivered*: the saga and its definition are loaded, the event is dry-run through
:func:`saga.engine.transition` to refuse what the engine would refuse (``rejected`` ->
:class:`~saga.errors.TransitionError`, ``dead_letter`` ->
:class:`~saga.errors.InvalidCommand`), and then ONE transaction writes the message
(to the replies topic, key = saga id) into the outbox together with an
``operator.requested`` audit record naming the caller and the reason. The coordinator
applies the event later and writes the engine's own audit records; the caller gets the
message id to follow it in the timeline.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from contracts import Envelope, MessageKind, Signal, new_message_id
from saga.coordinator import (
    DefinitionCache,
    control_message,
    replies_partitions,
    shard_of,
    start_saga,
)
from saga.definition import SagaDefinition, definition_to_dict, to_mermaid
from saga.engine import (
    CompensationStatus,
    ErrorInfo,
    Event,
    OperatorAbort,
    OperatorMarkCompensated,
    OperatorResume,
    OperatorRetryStep,
    OperatorSkipStep,
    SagaState,
    SagaStatus,
    SignalReceived,
    StepState,
    StepStatus,
    transition,
)
from saga.errors import (
    DefinitionNotFound,
    InvalidCommand,
    SagaNotFound,
    StoreError,
    TransitionError,
)
from saga.store import AuditWrite, OutboxMessage, SqlStore, verify_chain
from saga.telemetry import Telemetry
from saga.topics import Topics

Clock = Callable[[], datetime]

REQUESTED = "operator.requested"
"""Audit kind written when a caller asks for a signal, abort or operator verb."""


def _open_error(st: StepState) -> ErrorInfo | None:
    """A step's last error while it still matters.

    Not once the step (or, when it ran, its compensation) has succeeded after it; every
    attempt's error stays in the step's executions.
    """
    if st.compensation in (CompensationStatus.COMPENSATED, CompensationStatus.SKIPPED):
        return None
    if st.compensation is CompensationStatus.NONE and st.status in (
        StepStatus.SUCCEEDED,
        StepStatus.SKIPPED,
    ):
        return None
    return st.last_error


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


class Verb(StrEnum):
    """What a caller can ask of an existing saga."""

    START = "start"
    SIGNAL = "signal"
    ABORT = "abort"
    RETRY_STEP = "retry_step"
    SKIP_STEP = "skip_step"
    MARK_COMPENSATED = "mark_compensated"
    RESUME = "resume"


STEP_VERBS = frozenset({Verb.RETRY_STEP, Verb.SKIP_STEP})
"""Verbs that name a step."""


class _View(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StartResult(_View):
    """The saga a start created (or found, for a repeated idempotency key)."""

    saga_id: UUID
    """The saga's id."""
    created: bool
    """False when an earlier start with the same idempotency key created it."""


class Accepted(_View):
    """A signal or operator command written to the outbox for the coordinator."""

    saga_id: UUID
    """The saga addressed."""
    verb: Verb
    """What was asked."""
    message_id: UUID
    """Id of the message that delivers it; the saga's timeline shows its outcome."""
    status: str = "accepted"
    """Always ``accepted``: the coordinator applies it asynchronously."""


class StepExecutionView(_View):
    """One attempt of a step's command or compensation."""

    attempt: int
    kind: str
    """``command`` or ``compensation``."""
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    error_code: str | None = None
    error_message: str | None = None


class StepView(_View):
    """One step of a saga: the engine's view plus the recorded executions."""

    name: str
    kind: str
    """Step kind from the definition (``compensatable``, ``pivot``, ...)."""
    status: str
    """Forward status (``pending``, ``running``, ``succeeded``, ...)."""
    attempt: int
    compensation: str
    """Compensation status (``none``, ``running``, ``compensated``, ...)."""
    compensation_attempt: int
    last_error: ErrorInfo | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    executions: list[StepExecutionView] = Field(default_factory=list)


class AuditRecordView(_View):
    """One line of a saga's hash-chained audit trail."""

    seq: int
    recorded_at: datetime
    kind: str
    step: str | None = None
    attempt: int | None = None
    actor: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    hash: str


class SagaSummary(_View):
    """A saga as listed."""

    saga_id: UUID
    saga_type: str
    saga_version: int
    status: SagaStatus
    correlation_id: UUID | None = None
    created_at: datetime
    updated_at: datetime


class LockView(_View):
    """A saga's lock key: who holds it, and the saga's place in the queue."""

    key: str
    holder: str | None = None
    """The saga that holds the key now (``None``: nobody)."""
    position: int | None = None
    """1 for the next saga to get the key; ``None`` when this saga is not waiting."""


class SagaDetail(SagaSummary):
    """Everything about one saga: state, steps and timeline."""

    revision: int
    context: dict[str, Any]
    idempotency_key: str | None = None
    deadline_at: datetime | None = None
    stuck_step: str | None = None
    stuck_in: str | None = None
    last_error: ErrorInfo | None = None
    failure: ErrorInfo | None = None
    abort_reason: str | None = None
    lock: LockView | None = None
    """The lock key the saga holds or waits for (its definition's ``lock``)."""
    steps: list[StepView]
    timeline: list[AuditRecordView]
    timeline_intact: bool
    """Whether the timeline's hash chain verifies (no record altered, removed or added)."""


class SagaPage(_View):
    """One page of a saga listing."""

    items: list[SagaSummary]
    next_cursor: str | None = None
    """Pass as ``cursor`` for the next page; ``None`` on the last page."""


class DefinitionSummary(_View):
    """A registered definition."""

    name: str
    version: int


class DefinitionDetail(_View):
    """A registered definition with its body and a Mermaid graph."""

    name: str
    version: int
    content_hash: str
    description: str = ""
    definition: dict[str, Any]
    """The definition as data (the YAML/JSON form)."""
    mermaid: str
    """A Mermaid flowchart: forward edges solid, compensation edges dashed."""


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
                last_error=_open_error(st),
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
            **_summary(state).model_dump(),
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
            _dry_run(state, definition, event, now)
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


def _dry_run(state: SagaState, definition: SagaDefinition, event: Event, now: datetime) -> None:
    """Refuse now what the engine would refuse when the coordinator applies ``event``."""
    sid = str(state.saga_id)
    step = getattr(event, "step", None)
    if step and not definition.has_step(step):
        raise InvalidCommand(
            f"{state.saga_type} v{state.saga_version} has no step {step!r}",
            saga_id=sid,
            step=step,
        )
    decision = transition(state, event, definition, now)
    reason = decision.reason or f"the saga is {state.status}"
    if decision.outcome == "dead_letter":
        raise InvalidCommand(reason, saga_id=sid, step=step)
    if decision.outcome != "applied":
        raise TransitionError(reason, saga_id=sid, step=step)


def encode_cursor(position: tuple[datetime, str]) -> str:
    """An opaque cursor for the keyset position ``(created_at, saga id)``."""
    at, saga_id = position
    raw = json.dumps([at.isoformat(), saga_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The keyset position an :func:`encode_cursor` cursor stands for.

    Raises:
        ValueError: The cursor was not made by :func:`encode_cursor`.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, saga_id = json.loads(raw)
        return datetime.fromisoformat(at), str(UUID(saga_id))
    except (ValueError, TypeError) as exc:
        raise ValueError("not a cursor from a previous page") from exc


def _summary(state: SagaState) -> SagaSummary:
    return SagaSummary(
        saga_id=state.saga_id,
        saga_type=state.saga_type,
        saga_version=state.saga_version,
        status=state.status,
        correlation_id=state.correlation_id,
        created_at=state.created_at,
        updated_at=state.updated_at,
    )


def operator_event(verb: Verb, *, reason: str, actor: str, step: str | None) -> Event:
    """The engine event an operator verb delivers.

    Raises:
        ValueError: A step verb without a step, or a step given to a verb that takes none.
    """
    if verb in STEP_VERBS and not step:
        raise ValueError(f"{verb} needs a step")
    if verb not in STEP_VERBS and step is not None:
        raise ValueError(f"{verb} takes no step")
    match verb:
        case Verb.ABORT:
            return OperatorAbort(reason=reason, actor=actor)
        case Verb.RETRY_STEP:
            return OperatorRetryStep(step=step or "", reason=reason, actor=actor)
        case Verb.SKIP_STEP:
            return OperatorSkipStep(step=step or "", reason=reason, actor=actor)
        case Verb.MARK_COMPENSATED:
            return OperatorMarkCompensated(reason=reason, actor=actor)
        case Verb.RESUME:
            return OperatorResume(reason=reason, actor=actor)
    raise ValueError(f"{verb} is not an operator command")
