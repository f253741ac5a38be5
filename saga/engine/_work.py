"""The scratch pad of one transition: a mutable working copy that freezes into a Decision.

Theory of operation: :func:`saga.engine.transition` copies the frozen input state into a
:class:`Work`, lets one handler per event change it and record what to send, set, cancel,
audit and publish, and then freezes the result into a new :class:`SagaState` and
:class:`Decision`. The input state is never mutated, so a handler may give up half-way
by raising :class:`Refuse`; the input state is then returned unchanged.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from contracts import Envelope, MessageKind
from saga.definition import LockRelease, SagaDefinition, Step, commands_topic, evaluate
from saga.engine._decision import (
    AuditEntry,
    Decision,
    LifecycleEvent,
    LockEffect,
    Outcome,
    Outgoing,
    TimerKey,
    TimerSpec,
)
from saga.engine._events import TimerKind
from saga.engine._ids import derive_message_id
from saga.engine._state import (
    CompensationStatus,
    ErrorInfo,
    SagaState,
    StepState,
    StepStatus,
)
from saga.engine._table import TERMINAL, SagaStatus, StatusTrigger, next_status
from saga.errors import DefinitionError


class Refuse(Exception):  # control flow inside transition(); never escapes it
    """Raised by a handler to leave the state unchanged with an outcome and a reason."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome: Outcome = outcome
        self.reason = reason


class Work:
    """A mutable working copy of a :class:`SagaState` plus the decision being built."""

    def __init__(
        self,
        state: SagaState,
        definition: SagaDefinition,
        now: datetime,
        paused: frozenset[str],
        causation_id: UUID | None,
    ) -> None:
        self.original = state
        self.definition = definition
        self.specs = {s.name: s for s in definition.steps}
        self.now = now
        self.paused = paused
        self.causation_id = causation_id
        self.revision = state.revision + 1
        self.status = state.status
        self.context = dict(state.context)
        self.steps = dict(state.steps)
        self.completion = list(state.completion_order)
        self.compensations = list(state.compensation_order)
        self.pivot_passed = state.pivot_passed
        self.signals = dict(state.signals)
        self.failure = state.failure
        self.stuck_step = state.stuck_step
        self.stuck_in = state.stuck_in
        self.last_error = state.last_error
        self.abort_reason = state.abort_reason
        self.commands: list[Outgoing] = []
        self.timers_set: list[TimerSpec] = []
        self.timers_cancelled: list[TimerKey] = []
        self.audit_entries: list[AuditEntry] = []
        self.lifecycle: list[LifecycleEvent] = []
        self.locks: list[LockEffect] = []
        self.lock_key = state.lock_key
        self.deadline_at = state.deadline_at

    # -- state -------------------------------------------------------------------------

    def st(self, name: str) -> StepState:
        """Return the working state of step ``name``."""
        return self.steps[name]

    def update(self, name: str, **changes: Any) -> StepState:
        """Replace step ``name``'s state with a copy carrying ``changes``."""
        self.steps[name] = self.steps[name].model_copy(update=changes)
        return self.steps[name]

    def move(self, trigger: StatusTrigger) -> None:
        """Change the saga status through the table (an unlisted change raises)."""
        old = self.status
        self.status = next_status(old, trigger)
        change: dict[str, Any] = {
            "from": old.value,
            "to": self.status.value,
            "trigger": trigger.value,
        }
        self.audit_entries.append(AuditEntry(kind="status.changed", detail=change))

    def complete(self, name: str) -> None:
        """Append ``name`` to the completion order (once)."""
        if name not in self.completion:
            self.completion.append(name)

    @property
    def pivot(self) -> Step | None:
        """The pivot step, if any."""
        return self.definition.pivot

    def pivot_sent(self) -> bool:
        """Whether the pivot command has left (its outcome may be pending or unknown)."""
        pivot = self.pivot
        return pivot is not None and self.steps[pivot.name].sent

    def forward_in_flight(self) -> list[str]:
        """Steps whose command was sent and whose reply (or timeout) is awaited."""
        return [
            name
            for name, st in self.steps.items()
            if st.status is StepStatus.RUNNING and not st.deferred
        ]

    # -- outputs -----------------------------------------------------------------------

    def audit(
        self,
        kind: str,
        step: str | None = None,
        attempt: int | None = None,
        actor: str | None = None,
        **detail: Any,
    ) -> None:
        """Add an audit entry."""
        self.audit_entries.append(
            AuditEntry(kind=kind, step=step, attempt=attempt, actor=actor, detail=detail)
        )

    def publish(self, type_: str, step: str | None = None, **detail: Any) -> None:
        """Add a lifecycle event."""
        self.lifecycle.append(LifecycleEvent(type=type_, step=step, detail=detail))

    def set_timer(self, kind: TimerKind, step: str, attempt: int, delay_ms: int) -> None:
        """Set a timer due ``delay_ms`` from now."""
        due = self.now + timedelta(milliseconds=delay_ms)
        self.timers_set.append(TimerSpec(kind=kind, step=step, attempt=attempt, due_at=due))

    def cancel_timer(self, kind: TimerKind, step: str = "", attempt: int = 1) -> None:
        """Cancel a timer."""
        self.timers_cancelled.append(TimerKey(kind=kind, step=step, attempt=attempt))

    def _envelope(self, spec: Step, attempt: int, kind: MessageKind) -> Envelope:
        compensation = kind is MessageKind.COMPENSATION
        st = self.steps[spec.name]
        payload: dict[str, Any] = dict(st.input or {})
        if compensation and spec.compensation_input is not None:
            payload = self._compensation_payload(spec)
        elif compensation:
            # Compensations get the forward payload plus what the step returned (null when
            # its outcome is unknown), so they can undo it or accept "never happened".
            payload["output"] = st.output
        return Envelope(
            message_id=derive_message_id(
                self.now, self.original.saga_id, spec.name, attempt, kind.value, self.revision
            ),
            saga_id=self.original.saga_id,
            saga_type=self.original.saga_type,
            saga_version=self.original.saga_version,
            step=spec.name,
            attempt=attempt,
            kind=kind,
            type=(spec.compensation if compensation else spec.command) or "",
            payload=payload,
            causation_id=self.causation_id,
            correlation_id=self.original.correlation_id,
            occurred_at=self.now,
        )

    def _compensation_payload(self, spec: Step) -> dict[str, Any]:
        """Evaluate ``compensation_input`` over the context; a failing key becomes null.

        A compensation must always be sendable (the participant then decides), so an
        expression error here does not stop the saga from compensating.
        """
        payload: dict[str, Any] = {}
        for key, expr in (spec.compensation_input or {}).items():
            try:
                payload[key] = evaluate(expr, self.context, f"{spec.name}.compensation_input.{key}")
            except DefinitionError:
                payload[key] = None
        return payload

    def send_command(self, spec: Step, attempt: int) -> None:
        """Send attempt ``attempt`` of ``spec``'s command, or defer it if paused."""
        participant = spec.participant_name
        if participant in self.paused:
            self.update(spec.name, status=StepStatus.RUNNING, attempt=attempt, deferred=True)
            self.audit("command.deferred", spec.name, attempt, participant=participant)
            return
        self.update(spec.name, status=StepStatus.RUNNING, attempt=attempt)
        envelope = self._envelope(spec, attempt, MessageKind.COMMAND)
        self.commands.append(
            Outgoing(topic=commands_topic(participant), participant=participant, envelope=envelope)
        )
        self.update(spec.name, sent=True, deferred=False, message_id=envelope.message_id)
        if spec.timeout_ms is not None:
            self.set_timer(TimerKind.STEP_TIMEOUT, spec.name, attempt, spec.timeout_ms)
        self.audit("command.sent", spec.name, attempt, message_id=str(envelope.message_id))
        self.publish("step.started", spec.name, attempt=attempt, command=spec.command)

    def send_compensation(self, spec: Step, attempt: int) -> None:
        """Send attempt ``attempt`` of ``spec``'s compensation, or defer it if paused."""
        participant = spec.participant_name
        running = CompensationStatus.RUNNING
        if participant in self.paused:
            self.update(
                spec.name,
                compensation=running,
                compensation_attempt=attempt,
                compensation_deferred=True,
            )
            self.audit("compensation.deferred", spec.name, attempt, participant=participant)
            return
        self.update(spec.name, compensation=running, compensation_attempt=attempt)
        envelope = self._envelope(spec, attempt, MessageKind.COMPENSATION)
        self.commands.append(
            Outgoing(topic=commands_topic(participant), participant=participant, envelope=envelope)
        )
        self.update(
            spec.name, compensation_deferred=False, compensation_message_id=envelope.message_id
        )
        if spec.timeout_ms is not None:
            self.set_timer(TimerKind.COMPENSATION_TIMEOUT, spec.name, attempt, spec.timeout_ms)
        self.audit("compensation.sent", spec.name, attempt, message_id=str(envelope.message_id))
        self.publish("compensation.started", spec.name, attempt=attempt)

    # -- result ------------------------------------------------------------------------

    def _releases_lock(self) -> bool:
        """Whether this decision ends the saga's hold on (or wait for) its lock key."""
        if self.lock_key is None or self.status == self.original.status:
            return False
        releasing = set(TERMINAL)
        if self.definition.lock_release is LockRelease.FINAL_OR_STUCK:
            releasing.add(SagaStatus.STUCK)
        return self.status in releasing

    def freeze(self) -> Decision:
        """Return the applied decision with the new state."""
        state = self.original.model_copy(
            update={
                "status": self.status,
                "context": self.context,
                "steps": self.steps,
                "completion_order": tuple(self.completion),
                "compensation_order": tuple(self.compensations),
                "pivot_passed": self.pivot_passed,
                "signals": self.signals,
                "failure": self.failure,
                "stuck_step": self.stuck_step,
                "stuck_in": self.stuck_in,
                "last_error": self.last_error,
                "abort_reason": self.abort_reason,
                "lock_key": self.lock_key,
                "deadline_at": self.deadline_at,
                "updated_at": self.now,
                "revision": self.revision,
            }
        )
        if self._releases_lock():
            assert self.lock_key is not None
            self.locks.append(LockEffect(action="release", key=self.lock_key))
            self.audit("lock.released", key=self.lock_key)
            self.lock_key = None  # released once: a resumed saga runs without it
            state = state.model_copy(update={"lock_key": None})
        return Decision(
            state=state,
            locks=tuple(self.locks),
            commands=tuple(self.commands),
            timers_set=tuple(self.timers_set),
            timers_cancelled=tuple(self.timers_cancelled),
            audit=tuple(self.audit_entries),
            events=tuple(self.lifecycle),
            outcome="applied",
        )


def error(
    code: str, message: str = "", step: str | None = None, attempt: int | None = None
) -> ErrorInfo:
    """Build an :class:`ErrorInfo`."""
    return ErrorInfo(code=code, message=message, step=step, attempt=attempt)
