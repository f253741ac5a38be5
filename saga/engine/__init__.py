"""The pure decision engine: ``transition(state, event, definition, now) -> Decision``.

No I/O, no clock, no randomness: ``now`` comes in, and message ids and retry jitter are
derived from the saga id, step, attempt and revision. The allowed status changes are the
table :data:`TRANSITIONS`; the shell (coordinator, timers, API) loads the state, calls
:func:`transition` and persists what the :class:`Decision` says.
"""

from saga.engine._decision import (
    AuditEntry,
    Decision,
    LifecycleEvent,
    Outcome,
    Outgoing,
    TimerKey,
    TimerSpec,
)
from saga.engine._events import (
    Event,
    OperatorAbort,
    OperatorEvent,
    OperatorMarkCompensated,
    OperatorResume,
    OperatorRetryStep,
    OperatorSkipStep,
    ParticipantResumed,
    SignalReceived,
    StartSaga,
    StepFailed,
    StepSucceeded,
    TimerFired,
    TimerKind,
    event_from_envelope,
    parse_event,
)
from saga.engine._ids import derive_message_id, derive_seed
from saga.engine._retry import jitter_seed, retry_delay
from saga.engine._state import (
    CompensationStatus,
    ErrorInfo,
    SagaState,
    StepState,
    StepStatus,
)
from saga.engine._table import (
    TERMINAL,
    TRANSITIONS,
    SagaStatus,
    StatusTrigger,
    next_status,
    table_to_mermaid,
)
from saga.engine._transition import transition

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "AuditEntry",
    "CompensationStatus",
    "Decision",
    "ErrorInfo",
    "Event",
    "LifecycleEvent",
    "OperatorAbort",
    "OperatorEvent",
    "OperatorMarkCompensated",
    "OperatorResume",
    "OperatorRetryStep",
    "OperatorSkipStep",
    "Outcome",
    "Outgoing",
    "ParticipantResumed",
    "SagaState",
    "SagaStatus",
    "SignalReceived",
    "StartSaga",
    "StatusTrigger",
    "StepFailed",
    "StepState",
    "StepStatus",
    "StepSucceeded",
    "TimerFired",
    "TimerKey",
    "TimerKind",
    "TimerSpec",
    "derive_message_id",
    "derive_seed",
    "event_from_envelope",
    "jitter_seed",
    "next_status",
    "parse_event",
    "retry_delay",
    "table_to_mermaid",
    "transition",
]
