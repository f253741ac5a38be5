"""``transition(state, event, definition, now) -> Decision``: the pure decision function.

Theory of operation: one small handler per event type (a ``match`` in
:func:`transition`). Handlers work on a :class:`Work` copy (see ``_work.py``) and use the
forward/backward flow in ``_flow.py``. Stale, duplicate or unexpected events raise
:class:`Refuse` inside the handler, which :func:`transition` turns into an ``ignored``,
``rejected`` or ``dead_letter`` decision carrying the unchanged input state and one audit
entry. Every status change goes through the table in ``_table.py``. The function is
total: it never raises for a business outcome; the only exception it lets through is the
``AssertionError`` of a status change missing from the table, which is a bug.

Duplicates are harmless by construction: an event is accepted only while the state
still waits for it (a reply for the step's *current* attempt while it is in flight, a
timer for the current attempt while it is pending, ...), and applying it ends that wait.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from saga.definition import SagaDefinition, Step, evaluate
from saga.engine import _flow as flow
from saga.engine._decision import AuditEntry, Decision, LockEffect, Outcome
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
)
from saga.engine._state import CompensationStatus, SagaState, StepState, StepStatus
from saga.engine._table import TERMINAL, SagaStatus, StatusTrigger
from saga.engine._work import Refuse, Work, error
from saga.errors import DefinitionError


def transition(
    state: SagaState | None,
    event: Event,
    definition: SagaDefinition,
    now: datetime,
    *,
    paused: frozenset[str] = frozenset(),
) -> Decision:
    """Decide what ``event`` does to a saga.

    Pure, deterministic and total: no I/O, no clock (``now`` comes in), no randomness
    (ids and jitter derive from the saga id, step, attempt and revision).

    Args:
        state: The saga's current state; ``None`` only for :class:`StartSaga`.
        event: What happened.
        definition: The definition the saga runs (the one it started with).
        now: The current time (timezone-aware UTC).
        paused: Participants whose circuit breaker is open: their commands are deferred
            (recorded in the state, no attempt used, no timeout set) until a
            :class:`ParticipantResumed` event.

    Returns:
        The decision: the new state, commands, timers, audit entries and lifecycle
        events, and whether the event was applied, ignored, rejected or dead-lettered.
    """
    if isinstance(event, StartSaga):
        return _start(state, event, definition, now, paused)
    if state is None:
        return _refused(None, event, "dead_letter", "no saga state for this event")
    if (state.saga_type, state.saga_version) != (definition.name, definition.version):
        reason = (
            f"definition {definition.name} v{definition.version} does not match the "
            f"saga's {state.saga_type} v{state.saga_version}"
        )
        return _refused(state, event, "dead_letter", reason)
    foreign = _foreign(event, definition)
    if foreign is not None:
        return _refused(state, event, "dead_letter", foreign)
    operator = isinstance(event, OperatorEvent)
    if state.status in TERMINAL:
        outcome: Outcome = "rejected" if operator else "ignored"
        return _refused(state, event, outcome, f"the saga is {state.status}")
    w = Work(state, definition, now, paused, getattr(event, "message_id", None))
    actor = event.actor if isinstance(event, OperatorEvent) else None
    w.audit(
        _audit_kind(event, state),
        _event_step(event),
        getattr(event, "attempt", None),
        actor,
        event=event.model_dump(mode="json"),
    )
    try:
        if state.status is SagaStatus.QUEUED and not _reaches_a_queued_saga(event):
            raise Refuse("ignored", "the saga waits for its lock key and has not started")
        match event:
            case StepSucceeded():
                _on_succeeded(w, event)
            case StepFailed():
                _on_failed(w, event)
            case TimerFired():
                _on_timer(w, event)
            case SignalReceived():
                _on_signal(w, event)
            case OperatorAbort():
                _on_abort(w, event)
            case OperatorRetryStep() | OperatorResume():
                _on_retry(w, event)
            case OperatorSkipStep():
                _on_skip(w, event)
            case OperatorMarkCompensated():
                _on_mark_compensated(w, event)
            case ParticipantResumed():
                _on_participant_resumed(w, event)
    except Refuse as refusal:
        return _refused(state, event, refusal.outcome, refusal.reason)
    if operator:
        w.publish(
            "operator.action",
            _event_step(event),
            action=event.type,
            actor=actor,
            reason=getattr(event, "reason", ""),
        )
    return w.freeze()


_SAGA_TIMERS = frozenset({TimerKind.DEADLINE, TimerKind.LOCK_GRANTED, TimerKind.LOCK_TIMEOUT})
"""Timers of the saga as a whole (``step == ""``)."""


def _foreign(event: Event, definition: SagaDefinition) -> str | None:
    """Why ``event`` cannot belong to a saga of ``definition`` (``None`` if it can)."""
    if isinstance(event, StepSucceeded | StepFailed | TimerFired):
        if isinstance(event, TimerFired) and event.timer in _SAGA_TIMERS:
            return None
        if not definition.has_step(event.step):
            return f"the definition has no step {event.step!r}"
        if (
            not isinstance(event, TimerFired)
            and definition.step(event.step).traits.waits_for_signal
        ):
            return f"step {event.step!r} waits for a signal; it gets no replies"
    if isinstance(event, SignalReceived) and not any(
        s.traits.waits_for_signal and s.signal == event.name for s in definition.steps
    ):
        return f"no step waits for signal {event.name!r}"
    return None


def _event_step(event: Event) -> str | None:
    step = getattr(event, "step", None)
    return step or None


def _refused(state: SagaState | None, event: Event, outcome: Outcome, reason: str) -> Decision:
    kinds = {"ignored": "event.ignored", "rejected": "operator.rejected"}
    entry = AuditEntry(
        kind=kinds.get(outcome, "event.dead_lettered"),
        step=_event_step(event),
        attempt=getattr(event, "attempt", None),
        actor=getattr(event, "actor", None),
        detail={"event": event.model_dump(mode="json"), "reason": reason},
    )
    return Decision(state=state, audit=(entry,), outcome=outcome, reason=reason)


# -- start ------------------------------------------------------------------------------


def _start(
    state: SagaState | None,
    event: StartSaga,
    definition: SagaDefinition,
    now: datetime,
    paused: frozenset[str],
) -> Decision:
    if state is not None:
        return _refused(state, event, "ignored", "the saga has already started")
    lock_key = None
    if definition.lock is not None:
        try:
            found = evaluate(definition.lock, event.input, "lock")
        except DefinitionError as exc:
            return _refused(None, event, "rejected", f"the lock expression failed: {exc}")
        if found is None or found == "" or isinstance(found, dict | list | bool):
            return _refused(
                None,
                event,
                "rejected",
                f"the lock expression {definition.lock!r} found no key in the input"
                f" (it gave {found!r}; a lock key is a string or a number)",
            )
        lock_key = f"{definition.name}:{found}"  # one queue per saga type and value
    queued = lock_key is not None
    deadline_at = None
    if definition.deadline_ms is not None and not queued:
        deadline_at = now + timedelta(milliseconds=definition.deadline_ms)
    initial = SagaState(
        saga_id=event.saga_id,
        saga_type=definition.name,
        saga_version=definition.version,
        definition_hash=definition.content_hash,
        status=SagaStatus.QUEUED if queued else SagaStatus.RUNNING,
        context=dict(event.input),
        steps={s.name: StepState() for s in definition.steps},
        deadline_at=deadline_at,
        correlation_id=event.correlation_id,
        idempotency_key=event.idempotency_key,
        lock_key=lock_key,
        created_at=now,
        updated_at=now,
        revision=0,
    )
    w = Work(initial, definition, now, paused, event.message_id)
    w.audit("saga.started", definition_hash=initial.definition_hash, input=initial.context)
    if lock_key is not None:
        # The store grants the key at once when it is free (a lock_granted timer).
        w.locks.append(LockEffect(action="wait", key=lock_key))
        w.audit("lock.waiting", key=lock_key)
        w.publish("saga.queued", saga_type=definition.name, lock_key=lock_key)
        if definition.lock_timeout_ms is not None:
            w.set_timer(TimerKind.LOCK_TIMEOUT, "", 1, definition.lock_timeout_ms)
        return w.freeze()
    _begin(w)
    return w.freeze()


def _begin(w: Work) -> None:
    """Run the saga: the started event, its deadline, the first steps."""
    definition = w.definition
    w.publish("saga.started", saga_type=definition.name, saga_version=definition.version)
    if definition.deadline_ms is not None:
        w.set_timer(TimerKind.DEADLINE, "", 1, definition.deadline_ms)
    flow.advance(w)


def _on_lock_timer(w: Work, event: TimerFired) -> None:
    if w.status is not SagaStatus.QUEUED:
        raise _stale_timer(event, f"the saga is {w.status}, not waiting for its lock")
    if event.timer is TimerKind.LOCK_GRANTED:
        w.move(StatusTrigger.LOCK_GRANTED)
        w.audit("lock.acquired", key=w.lock_key)
        if w.definition.lock_timeout_ms is not None:
            w.cancel_timer(TimerKind.LOCK_TIMEOUT, "", 1)
        if w.definition.deadline_ms is not None:
            w.deadline_at = w.now + timedelta(milliseconds=w.definition.deadline_ms)
        _begin(w)
        return
    w.move(StatusTrigger.LOCK_TIMEOUT)
    w.abort_reason = "lock timeout: another saga held the lock key for too long"
    w.audit("lock.timed_out", key=w.lock_key)
    w.publish("saga.aborted", None, reason=w.abort_reason)


# -- replies ----------------------------------------------------------------------------


def _reaches_a_queued_saga(event: Event) -> bool:
    """The events a saga waiting for its lock acts on (signals are kept for later)."""
    if isinstance(event, TimerFired):
        return event.timer in (TimerKind.LOCK_GRANTED, TimerKind.LOCK_TIMEOUT)
    return isinstance(event, OperatorAbort | SignalReceived)


def _audit_kind(event: Event, state: SagaState) -> str:
    """``event.<type>``; a reply to a compensation is ``event.compensation_<outcome>``."""
    if isinstance(event, StepSucceeded | StepFailed):
        st = state.steps.get(event.step)
        if st is not None and _is_compensation(event, st):
            outcome = "succeeded" if isinstance(event, StepSucceeded) else "failed"
            return f"event.compensation_{outcome}"
    return f"event.{event.type}"


def _is_compensation(event: StepSucceeded | StepFailed, st: StepState) -> bool:
    if event.compensation is not None:
        return event.compensation
    if event.causation_id is not None:
        if event.causation_id == st.compensation_message_id:
            return True
        if event.causation_id == st.message_id:
            return False
    # No usable hint: a reply can only answer what is in flight, forward first.
    return st.status is not StepStatus.RUNNING and st.compensation is CompensationStatus.RUNNING


def _expect_forward_reply(w: Work, st: StepState, attempt: int) -> None:
    if st.status is not StepStatus.RUNNING or st.deferred:
        raise Refuse("ignored", f"no command is awaiting a reply (step is {st.status})")
    if attempt != st.attempt:
        kind = "stale" if attempt < st.attempt else "unexpected"
        raise Refuse("ignored", f"{kind} reply for attempt {attempt}; current is {st.attempt}")


def _expect_compensation_reply(w: Work, st: StepState, attempt: int) -> None:
    if st.compensation is not CompensationStatus.RUNNING or st.compensation_deferred:
        raise Refuse("ignored", f"no compensation is awaiting a reply ({st.compensation})")
    if attempt != st.compensation_attempt:
        kind = "stale" if attempt < st.compensation_attempt else "unexpected"
        raise Refuse(
            "ignored",
            f"{kind} compensation reply for attempt {attempt}; "
            f"current is {st.compensation_attempt}",
        )


def _on_succeeded(w: Work, event: StepSucceeded) -> None:
    spec = w.specs[event.step]  # _foreign: a known command step
    st = w.st(spec.name)
    if _is_compensation(event, st):
        _expect_compensation_reply(w, st, event.attempt)
        if spec.timeout_ms is not None:
            w.cancel_timer(TimerKind.COMPENSATION_TIMEOUT, spec.name, event.attempt)
        flow.compensation_succeeded(w, spec)
        return
    _expect_forward_reply(w, st, event.attempt)
    if spec.timeout_ms is not None:
        w.cancel_timer(TimerKind.STEP_TIMEOUT, spec.name, event.attempt)
    flow.succeed(w, spec, event.output)


def _on_failed(w: Work, event: StepFailed) -> None:
    spec = w.specs[event.step]  # _foreign: a known command step
    st = w.st(spec.name)
    failure = error(event.code, event.message, spec.name, event.attempt)
    if _is_compensation(event, st):
        _expect_compensation_reply(w, st, event.attempt)
        if spec.timeout_ms is not None:
            w.cancel_timer(TimerKind.COMPENSATION_TIMEOUT, spec.name, event.attempt)
        flow.compensation_failure(
            w, spec, failure, retriable=event.retriable, retry_after_ms=event.retry_after_ms
        )
        return
    _expect_forward_reply(w, st, event.attempt)
    if spec.timeout_ms is not None:
        w.cancel_timer(TimerKind.STEP_TIMEOUT, spec.name, event.attempt)
    flow.forward_failure(
        w,
        spec,
        failure,
        retriable=event.retriable,
        retry_after_ms=event.retry_after_ms,
        timed_out=False,
    )


# -- timers -----------------------------------------------------------------------------


def _stale_timer(event: TimerFired, why: str) -> Refuse:
    return Refuse("ignored", f"{event.timer} timer for attempt {event.attempt}: {why}")


def _on_timer(w: Work, event: TimerFired) -> None:
    if event.timer in (TimerKind.LOCK_GRANTED, TimerKind.LOCK_TIMEOUT):
        _on_lock_timer(w, event)
        return
    if event.timer is TimerKind.DEADLINE:
        _on_deadline(w)
        return
    spec = w.specs[event.step]  # _foreign: a known step
    st = w.st(spec.name)
    match event.timer:
        case TimerKind.STEP_TIMEOUT:
            if spec.traits.waits_for_signal:
                raise _stale_timer(event, "a wait step has a signal timeout instead")
            _expect_forward_reply(w, st, event.attempt)
            failure = error(flow.TIMEOUT, "no reply in time", spec.name, event.attempt)
            flow.forward_failure(
                w, spec, failure, retriable=True, retry_after_ms=None, timed_out=True
            )
        case TimerKind.RETRY_DUE:
            if st.status is not StepStatus.RETRY_SCHEDULED or event.attempt != st.attempt + 1:
                raise _stale_timer(event, f"no such retry is scheduled ({st.status})")
            w.send_command(spec, event.attempt)
        case TimerKind.SIGNAL_TIMEOUT:
            if st.status is not StepStatus.WAITING or event.attempt != st.attempt:
                raise _stale_timer(event, f"the step is not waiting ({st.status})")
            flow.signal_timed_out(w, spec)
        case TimerKind.COMPENSATION_TIMEOUT:
            _expect_compensation_reply(w, st, event.attempt)
            failure = error(flow.TIMEOUT, "no compensation reply in time", spec.name, event.attempt)
            flow.compensation_failure(w, spec, failure, retriable=True, retry_after_ms=None)
        case TimerKind.COMPENSATION_RETRY_DUE:
            if (
                st.compensation is not CompensationStatus.RETRY_SCHEDULED
                or event.attempt != st.compensation_attempt + 1
            ):
                raise _stale_timer(event, f"no compensation retry is scheduled ({st.compensation})")
            w.send_compensation(spec, event.attempt)


def _on_deadline(w: Work) -> None:
    if w.status is not SagaStatus.RUNNING:
        raise Refuse("ignored", f"deadline passed while the saga is {w.status}")
    if w.pivot_passed or w.pivot_sent():
        raise Refuse("ignored", "deadline passed after the pivot was sent: only forward now")
    flow.begin_compensation(
        w, StatusTrigger.DEADLINE_EXPIRED, error(flow.DEADLINE_EXCEEDED, "the saga deadline passed")
    )


# -- signals ----------------------------------------------------------------------------


def _on_signal(w: Work, event: SignalReceived) -> None:
    # _foreign made sure at least one step waits for this signal.
    specs = [s for s in w.definition.steps if s.traits.waits_for_signal and s.signal == event.name]
    if w.status not in (SagaStatus.RUNNING, SagaStatus.STUCK):
        raise Refuse("ignored", f"signal {event.name!r} arrived while the saga is {w.status}")
    waiting = [s for s in specs if w.st(s.name).status is StepStatus.WAITING]
    if waiting:
        for spec in waiting:
            w.cancel_timer(TimerKind.SIGNAL_TIMEOUT, spec.name, w.st(spec.name).attempt)
            w.audit("signal.received", spec.name, signal=event.name)
            flow.succeed(w, spec, dict(event.data))
        return
    pending = any(w.st(s.name).status is StepStatus.PENDING for s in specs)
    if pending and event.name not in w.signals:
        # Early (e.g. an approval before the approval step started): keep it for later.
        w.signals[event.name] = dict(event.data)
        w.audit("signal.buffered", signal=event.name)
        return
    raise Refuse("ignored", f"no step is waiting for signal {event.name!r}")


# -- operator ---------------------------------------------------------------------------


def _on_abort(w: Work, event: OperatorAbort) -> None:
    failure = error(flow.ABORTED, event.reason or "aborted by an operator")
    if w.status is SagaStatus.QUEUED:
        w.abort_reason = event.reason
        w.move(StatusTrigger.OPERATOR_ABORT)
        if w.definition.lock_timeout_ms is not None:
            w.cancel_timer(TimerKind.LOCK_TIMEOUT, "", 1)
        w.publish("saga.aborted", None, reason=event.reason)
    elif w.status is SagaStatus.RUNNING:
        if w.pivot_passed or w.pivot_sent():
            raise Refuse("rejected", "the pivot was sent: the saga can only go forward")
        w.abort_reason = event.reason
        flow.begin_compensation(w, StatusTrigger.OPERATOR_ABORT, failure)
    elif w.status is SagaStatus.STUCK:
        w.abort_reason = event.reason
        if w.stuck_in == "forward" and not w.pivot_passed:
            flow.begin_compensation(w, StatusTrigger.OPERATOR_ABORT_COMPENSATE, failure)
        else:
            w.move(StatusTrigger.OPERATOR_ABORT)
            flow.cancel_deadline(w)
            w.publish("saga.aborted", w.stuck_step, reason=event.reason)
    else:
        raise Refuse("rejected", f"cannot abort a saga that is {w.status}")


def _stuck_step(w: Work, step: str | None) -> Step:
    if w.status is not SagaStatus.STUCK or w.stuck_step is None:
        raise Refuse("rejected", f"the saga is {w.status}, not stuck")
    if step is not None and step != w.stuck_step:
        raise Refuse("rejected", f"the saga is stuck on {w.stuck_step!r}, not {step!r}")
    return w.specs[w.stuck_step]


def _unstick(w: Work) -> None:
    w.stuck_step = w.stuck_in = None
    w.last_error = None


def _on_retry(w: Work, event: OperatorRetryStep | OperatorResume) -> None:
    spec = _stuck_step(w, event.step if isinstance(event, OperatorRetryStep) else None)
    st = w.st(spec.name)
    if w.stuck_in == "compensation":
        _unstick(w)
        w.move(StatusTrigger.OPERATOR_RETRY_COMPENSATION)
        w.update(spec.name, compensation_retry_base=st.compensation_attempt)
        w.send_compensation(spec, st.compensation_attempt + 1)
        return
    _unstick(w)
    w.move(StatusTrigger.OPERATOR_RETRY_STEP)
    # A fresh budget; the step starts again (input and condition re-evaluated).
    w.update(spec.name, status=StepStatus.PENDING, retry_base=st.attempt)
    flow.advance(w)


def _on_skip(w: Work, event: OperatorSkipStep) -> None:
    spec = w.specs.get(event.step)
    if spec is None:
        raise Refuse("rejected", f"the definition has no step {event.step!r}")
    st = w.st(spec.name)
    if w.status is SagaStatus.RUNNING and st.status is StepStatus.WAITING:
        w.cancel_timer(TimerKind.SIGNAL_TIMEOUT, spec.name, st.attempt)
        w.update(spec.name, status=StepStatus.SKIPPED, finished_at=w.now)
        w.audit("step.skipped", spec.name, st.attempt, reason="skipped by an operator")
        flow.advance(w)
        return
    _stuck_step(w, event.step)
    if w.stuck_in == "compensation":
        _unstick(w)
        w.move(StatusTrigger.OPERATOR_SKIP_COMPENSATION)
        w.update(spec.name, compensation=CompensationStatus.SKIPPED)
        w.compensations.append(spec.name)
        w.audit("compensation.skipped", spec.name, reason=event.reason)
        flow.advance_compensation(w)
        return
    _unstick(w)
    w.move(StatusTrigger.OPERATOR_SKIP_STEP)
    w.update(spec.name, status=StepStatus.SKIPPED, finished_at=w.now)
    w.audit("step.skipped", spec.name, reason="skipped by an operator")
    if spec.traits.pivot:
        w.pivot_passed = True  # the operator resolved the unknown pivot as done
        w.audit("pivot.passed", spec.name)
    flow.advance(w)


def _on_mark_compensated(w: Work, event: OperatorMarkCompensated) -> None:
    if w.status is not SagaStatus.STUCK:
        raise Refuse("rejected", f"only a stuck saga can be marked compensated ({w.status})")
    outstanding = [
        n
        for n in reversed(w.completion)
        if w.specs[n].traits.compensatable
        and w.st(n).sent
        and w.st(n).compensation not in (CompensationStatus.COMPENSATED, CompensationStatus.SKIPPED)
    ]
    w.move(StatusTrigger.OPERATOR_MARK_COMPENSATED)
    w.audit("saga.marked_compensated", outstanding=outstanding, reason=event.reason)
    flow.cancel_deadline(w)
    w.publish("saga.compensated", reason="marked compensated by an operator")


def _on_participant_resumed(w: Work, event: ParticipantResumed) -> None:
    if event.participant in w.paused:
        raise Refuse("ignored", f"participant {event.participant!r} is still paused")
    released = 0
    for spec in w.definition.steps:
        if spec.participant != event.participant:
            continue
        st = w.st(spec.name)
        if st.status is StepStatus.RUNNING and st.deferred:
            w.send_command(spec, st.attempt)
            released += 1
        if st.compensation is CompensationStatus.RUNNING and st.compensation_deferred:
            w.send_compensation(spec, st.compensation_attempt)
            released += 1
    if not released:
        raise Refuse("ignored", f"nothing is deferred for participant {event.participant!r}")
