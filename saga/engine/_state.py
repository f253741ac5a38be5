"""The engine's state of one saga: frozen values, replaced (never mutated) by each decision."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from saga.engine._table import TERMINAL, SagaStatus


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StepStatus(StrEnum):
    """Forward progress of one step."""

    PENDING = "pending"
    """Not started (dependencies not done yet, or the saga stopped before it)."""
    RUNNING = "running"
    """Command sent (or deferred while its participant is paused); awaiting the reply."""
    WAITING = "waiting"
    """A wait step waiting for its signal."""
    RETRY_SCHEDULED = "retry_scheduled"
    """Failed; the next attempt is sent when the back-off timer fires."""
    SUCCEEDED = "succeeded"
    """Done; its output was merged into the context."""
    SKIPPED = "skipped"
    """Condition false, wait timed out with ``continue``, or skipped by an operator."""
    FAILED = "failed"
    """Failed for good."""
    TIMED_OUT = "timed_out"
    """Gave up after a timeout: outcome unknown, so it is compensated like a completed step."""
    CANCELLED = "cancelled"
    """Abandoned before its next attempt because the saga started compensating."""


class CompensationStatus(StrEnum):
    """Progress of one step's compensation."""

    NONE = "none"
    """Not started (and perhaps never needed)."""
    RUNNING = "running"
    """Compensation sent (or deferred); awaiting the reply."""
    RETRY_SCHEDULED = "retry_scheduled"
    """Failed; the next attempt is sent when the back-off timer fires."""
    COMPENSATED = "compensated"
    """Undone."""
    SKIPPED = "skipped"
    """An operator said it needs no compensation."""
    FAILED = "failed"
    """Gave up: the saga is stuck on it."""


class ErrorInfo(_Frozen):
    """An error recorded in the state."""

    code: str
    """Stable error code (participant codes, or ``saga.*`` for the engine's own)."""
    message: str = ""
    """Human-readable description."""
    step: str | None = None
    """The step it happened in."""
    attempt: int | None = None
    """The attempt it happened in."""


class StepState(_Frozen):
    """What the engine knows about one step."""

    status: StepStatus = StepStatus.PENDING
    """Forward status."""
    attempt: int = 0
    """Current attempt of the command (0: never started)."""
    retry_base: int = 0
    """Attempts before the current retry budget (an operator retry starts a new budget)."""
    sent: bool = False
    """Whether a command for this step was ever sent (only sent steps are compensated)."""
    deferred: bool = False
    """The current attempt is held back because its participant is paused."""
    uncertain: bool = False
    """Some attempt timed out, so the step may have taken effect."""
    message_id: UUID | None = None
    """Message id of the last command sent."""
    input: dict[str, Any] | None = None
    """Payload of the command (evaluated once; retries and the compensation reuse it)."""
    output: dict[str, Any] | None = None
    """Output of the successful reply (or the signal's data)."""
    last_error: ErrorInfo | None = None
    """The last failure of the command or the compensation."""
    started_at: datetime | None = None
    """When the step started."""
    finished_at: datetime | None = None
    """When the step reached its final forward status."""
    compensation: CompensationStatus = CompensationStatus.NONE
    """Compensation status."""
    compensation_attempt: int = 0
    """Current attempt of the compensation."""
    compensation_retry_base: int = 0
    """Compensation attempts before the current retry budget."""
    compensation_deferred: bool = False
    """The compensation is held back because its participant is paused."""
    compensation_message_id: UUID | None = None
    """Message id of the last compensation sent."""


class SagaState(_Frozen):
    """The whole state of one saga; the store persists it as JSON."""

    saga_id: UUID
    """The saga's id (the Kafka key of all its messages)."""
    saga_type: str
    """Name of the definition."""
    saga_version: int
    """Version of the definition."""
    definition_hash: str
    """Content hash of the definition the saga started with."""
    status: SagaStatus
    """Current status."""
    context: dict[str, Any]
    """The start input, with step outputs merged in by the output mappings."""
    steps: dict[str, StepState]
    """Per-step state, keyed by step name (every step of the definition)."""
    completion_order: tuple[str, ...] = ()
    """Steps in the order they completed (or gave up with an unknown outcome)."""
    compensation_order: tuple[str, ...] = ()
    """Steps in the order their compensation completed (or was skipped by an operator)."""
    pivot_passed: bool = False
    """Whether the pivot completed: from then on the saga only goes forward."""
    signals: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Signals that arrived before their wait step started (consumed when it starts)."""
    failure: ErrorInfo | None = None
    """Why compensation started."""
    stuck_step: str | None = None
    """The step (or compensation) the saga is stuck on."""
    stuck_in: Literal["forward", "compensation"] | None = None
    """Whether the stuck step's command or its compensation gave up."""
    last_error: ErrorInfo | None = None
    """The error that made the saga stuck."""
    abort_reason: str | None = None
    """The operator's reason, when the saga was aborted."""
    deadline_at: datetime | None = None
    """When the saga deadline fires, if it has one."""
    correlation_id: UUID | None = None
    """Business correlation id shared by all the saga's messages."""
    idempotency_key: str | None = None
    """The client's idempotency key of the start request."""
    lock_key: str | None = None
    """The key of the definition's ``lock`` this saga holds or waits for (``None`` once
    it let the key go)."""
    created_at: datetime
    """When the saga started."""
    updated_at: datetime
    """When the last applied decision happened."""
    revision: int = Field(default=0, ge=0)
    """Incremented by every applied decision (optimistic concurrency in the store)."""

    @property
    def is_terminal(self) -> bool:
        """Whether the saga reached a terminal status."""
        return self.status in TERMINAL

    def step(self, name: str) -> StepState:
        """Return the state of step ``name`` (raises ``KeyError`` when unknown)."""
        return self.steps[name]
