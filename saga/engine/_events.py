"""What the engine reacts to: frozen events, each tagged by ``type`` so they store as JSON.

Replies, timers and signals arrive as :class:`contracts.Envelope` messages;
:func:`event_from_envelope` turns them into events. Operator commands come from the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from contracts import REPLY_FAILED, REPLY_SUCCEEDED, Envelope, MessageKind
from contracts import Signal as SignalBody
from contracts import StepFailed as FailedBody
from contracts import StepSucceeded as SucceededBody
from saga.errors import ContractError


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TimerKind(StrEnum):
    """What a timer is for. Saga-level timers (the deadline) have ``step == ""``."""

    STEP_TIMEOUT = "step_timeout"
    """No reply to a command attempt in time."""
    RETRY_DUE = "retry_due"
    """The back-off before the next command attempt is over."""
    DEADLINE = "deadline"
    """The saga deadline."""
    SIGNAL_TIMEOUT = "signal_timeout"
    """A wait step's signal did not arrive in time."""
    COMPENSATION_TIMEOUT = "compensation_timeout"
    """No reply to a compensation attempt in time."""
    COMPENSATION_RETRY_DUE = "compensation_retry_due"
    """The back-off before the next compensation attempt is over."""
    LOCK_GRANTED = "lock_granted"
    """A queued saga got its lock key (set by the store when the key is free)."""
    LOCK_TIMEOUT = "lock_timeout"
    """A queued saga waited for its lock key too long."""


class StartSaga(_Event):
    """Start a new saga (the only event accepted without a state)."""

    type: Literal["start"] = "start"
    saga_id: UUID
    """Id of the new saga."""
    input: dict[str, Any] = Field(default_factory=dict)
    """The start input: the initial saga context."""
    correlation_id: UUID | None = None
    """Business correlation id, copied onto every message."""
    idempotency_key: str | None = None
    """The client's idempotency key."""
    message_id: UUID | None = None
    """Id of the start request, if it came as a message."""


class StepSucceeded(_Event):
    """A participant's success reply."""

    type: Literal["step_succeeded"] = "step_succeeded"
    step: str
    """The step replied to."""
    attempt: int = Field(ge=1)
    """The attempt replied to; an older attempt is stale."""
    output: dict[str, Any] = Field(default_factory=dict)
    """The step's output."""
    compensation: bool | None = None
    """Whether this answers the compensation; ``None``: decided from ``causation_id`` or state."""
    causation_id: UUID | None = None
    """Message id of the command or compensation replied to."""
    message_id: UUID | None = None
    """Id of the reply message."""


class StepFailed(_Event):
    """A participant's failure reply."""

    type: Literal["step_failed"] = "step_failed"
    step: str
    """The step replied to."""
    attempt: int = Field(ge=1)
    """The attempt replied to; an older attempt is stale."""
    code: str
    """Stable error code."""
    message: str = ""
    """Human-readable description."""
    retriable: bool = False
    """Whether the participant allows a retry."""
    retry_after_ms: int | None = Field(default=None, ge=0)
    """Minimum delay the participant asks for before the next attempt."""
    compensation: bool | None = None
    """Whether this answers the compensation; ``None``: decided from ``causation_id`` or state."""
    causation_id: UUID | None = None
    """Message id of the command or compensation replied to."""
    message_id: UUID | None = None
    """Id of the reply message."""


class TimerFired(_Event):
    """A timer the engine set is due."""

    type: Literal["timer_fired"] = "timer_fired"
    timer: TimerKind
    """What the timer is for."""
    step: str = ""
    """The step (``""`` for the deadline)."""
    attempt: int = Field(default=1, ge=1)
    """The attempt the timer belongs to; a timer of an older attempt is stale."""
    message_id: UUID | None = None
    """Id of the timer message."""


class SignalReceived(_Event):
    """A named external signal, e.g. a human approval."""

    type: Literal["signal_received"] = "signal_received"
    name: str
    """Signal name, matched against wait steps' ``signal``."""
    data: dict[str, Any] = Field(default_factory=dict)
    """Signal data: the wait step's output."""
    message_id: UUID | None = None
    """Id of the signal message."""


class _Operator(_Event):
    reason: str = ""
    """Why the operator did it (recorded in the audit log)."""
    actor: str = "operator"
    """Who did it."""


class OperatorAbort(_Operator):
    """Abort: compensate if still possible, else end a stuck saga as aborted."""

    type: Literal["operator_abort"] = "operator_abort"


class OperatorRetryStep(_Operator):
    """Retry the stuck step (or its compensation) with a fresh retry budget."""

    type: Literal["operator_retry_step"] = "operator_retry_step"
    step: str
    """The step the saga is stuck on."""


class OperatorSkipStep(_Operator):
    """Count the stuck step (or compensation), or a waiting wait step, as done."""

    type: Literal["operator_skip_step"] = "operator_skip_step"
    step: str
    """The step to skip."""


class OperatorMarkCompensated(_Operator):
    """Declare a stuck saga compensated (the operator undid the rest by hand)."""

    type: Literal["operator_mark_compensated"] = "operator_mark_compensated"


class OperatorResume(_Operator):
    """Resume a stuck saga: retry whatever it is stuck on with a fresh retry budget."""

    type: Literal["operator_resume"] = "operator_resume"


class ParticipantResumed(_Event):
    """A participant's circuit closed again: send the commands deferred for it."""

    type: Literal["participant_resumed"] = "participant_resumed"
    participant: str
    """The participant."""


Event = Annotated[
    StartSaga
    | StepSucceeded
    | StepFailed
    | TimerFired
    | SignalReceived
    | OperatorAbort
    | OperatorRetryStep
    | OperatorSkipStep
    | OperatorMarkCompensated
    | OperatorResume
    | ParticipantResumed,
    Field(discriminator="type"),
]
"""Any engine event (a discriminated union on ``type``)."""

OperatorEvent = (
    OperatorAbort | OperatorRetryStep | OperatorSkipStep | OperatorMarkCompensated | OperatorResume
)
"""The operator commands (illegal ones are *rejected*, not ignored)."""

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: Mapping[str, Any] | str | bytes) -> Event:
    """Parse an event from a dict or JSON.

    Raises:
        ContractError: The data is not a valid event.
    """
    try:
        if isinstance(data, str | bytes):
            return _ADAPTER.validate_json(data)
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ContractError(f"invalid event: {loc}: {first['msg']}") from exc


def event_from_envelope(envelope: Envelope) -> Event:
    """Turn a reply, timer or signal envelope into an event.

    Conventions: replies have ``type`` ``reply.succeeded``/``reply.failed`` and the
    body of :class:`contracts.StepSucceeded`/:class:`contracts.StepFailed`; their
    ``causation_id`` is the command's (or compensation's) message id. Timers have
    ``type`` ``timer.<TimerKind>``. Signals carry a :class:`contracts.Signal` body.

    Raises:
        ContractError: The envelope is none of these.
    """
    try:
        if envelope.kind is MessageKind.REPLY and envelope.step is not None:
            if envelope.type == REPLY_SUCCEEDED:
                ok = SucceededBody.model_validate(envelope.payload)
                return StepSucceeded(
                    step=envelope.step,
                    attempt=envelope.attempt,
                    output=ok.output,
                    causation_id=envelope.causation_id,
                    message_id=envelope.message_id,
                )
            if envelope.type == REPLY_FAILED:
                failed = FailedBody.model_validate(envelope.payload)
                return StepFailed(
                    step=envelope.step,
                    attempt=envelope.attempt,
                    code=failed.code,
                    message=failed.message,
                    retriable=failed.retriable,
                    retry_after_ms=failed.retry_after_ms,
                    causation_id=envelope.causation_id,
                    message_id=envelope.message_id,
                )
        if envelope.kind is MessageKind.TIMER and envelope.type.startswith("timer."):
            return TimerFired(
                timer=TimerKind(envelope.type.removeprefix("timer.")),
                step=envelope.step or "",
                attempt=envelope.attempt,
                message_id=envelope.message_id,
            )
        if envelope.kind is MessageKind.SIGNAL:
            signal = SignalBody.model_validate(envelope.payload)
            return SignalReceived(
                name=signal.name, data=signal.data, message_id=envelope.message_id
            )
    except (ValidationError, ValueError) as exc:
        raise ContractError(
            f"invalid {envelope.kind} message {envelope.type!r}: {exc}",
            saga_id=str(envelope.saga_id),
            step=envelope.step,
            message_id=str(envelope.message_id),
        ) from exc
    raise ContractError(
        f"not an engine event: kind={envelope.kind} type={envelope.type!r}",
        saga_id=str(envelope.saga_id),
        step=envelope.step,
        message_id=str(envelope.message_id),
    )
