"""The answers of the operations: frozen pydantic models, shared by API, CLI and console.

They are built from the engine's ``SagaState`` and the store's rows, never stored;
``extra="forbid"`` keeps a field the caller did not expect from slipping in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from saga.engine import CompensationStatus, ErrorInfo, SagaState, SagaStatus, StepState, StepStatus
from saga.operations._verbs import Verb


def open_error(st: StepState) -> ErrorInfo | None:
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


def summary_of(state: SagaState) -> SagaSummary:
    return SagaSummary(
        saga_id=state.saga_id,
        saga_type=state.saga_type,
        saga_version=state.saga_version,
        status=state.status,
        correlation_id=state.correlation_id,
        created_at=state.created_at,
        updated_at=state.updated_at,
    )
