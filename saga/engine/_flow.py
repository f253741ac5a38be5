"""How a saga moves: forward along the DAG, and backwards through compensations.

These functions act on a :class:`Work` and are shared by the event handlers in
``_transition.py``. Forward: a step is ready when every dependency succeeded or was
skipped; ready steps start in definition order until nothing changes. Backwards:
compensation waits until no forward command is in flight, then compensates one step at a
time in exact reverse completion order.
"""

from __future__ import annotations

from typing import Any

from saga.definition import OnTimeout, Step, evaluate, evaluate_mapping, is_truthy
from saga.engine._events import TimerKind
from saga.engine._retry import jitter_seed, retry_delay
from saga.engine._state import CompensationStatus, ErrorInfo, StepStatus
from saga.engine._table import SagaStatus, StatusTrigger
from saga.engine._work import Work, error
from saga.errors import DefinitionError

DONE = frozenset({StepStatus.SUCCEEDED, StepStatus.SKIPPED})
"""Forward statuses that let dependent steps start."""

GAVE_UP = frozenset({StepStatus.FAILED, StepStatus.TIMED_OUT})
"""Forward statuses of a step whose policy gave up."""

EXPRESSION_ERROR = "saga.expression_error"
TIMEOUT = "saga.timeout"
SIGNAL_TIMEOUT = "saga.signal_timeout"
DEADLINE_EXCEEDED = "saga.deadline_exceeded"
ABORTED = "saga.aborted"


# -- forward ----------------------------------------------------------------------------


def advance(w: Work) -> None:
    """Start every ready step (repeatedly), then complete the saga if all are done."""
    if w.status is not SagaStatus.RUNNING:
        return
    for spec in w.definition.steps:
        st = w.st(spec.name)
        if w.pivot_passed and st.status in GAVE_UP:
            # Left over from while the saga was stuck: stuck again, on this step.
            go_stuck(w, spec.name, st.last_error or error("saga.failed", step=spec.name))
            return
    progressed = True
    while progressed:
        progressed = False
        for spec in w.definition.steps:
            if w.st(spec.name).status is StepStatus.PENDING and all(
                w.st(dep).status in DONE for dep in spec.depends_on
            ):
                start_step(w, spec)
                progressed = True
                if w.status is not SagaStatus.RUNNING:
                    return
    if all(st.status in DONE for st in w.steps.values()):
        w.move(StatusTrigger.STEPS_COMPLETED)
        cancel_deadline(w)
        w.publish("saga.completed")


def start_step(w: Work, spec: Step) -> None:
    """Start a ready step: skip it, wait for its signal, or send its command."""
    st = w.update(spec.name, started_at=w.now, finished_at=None)
    attempt = st.attempt + 1
    if spec.when is not None:
        try:
            go = is_truthy(evaluate(spec.when, w.context, f"{spec.name}.when"))
        except DefinitionError as exc:
            w.update(spec.name, attempt=attempt)
            give_up(w, spec, error(EXPRESSION_ERROR, exc.message, spec.name, attempt))
            return
        if not go:
            w.update(spec.name, status=StepStatus.SKIPPED, finished_at=w.now)
            w.audit("step.skipped", spec.name, reason="condition is false", when=spec.when)
            w.publish("step.skipped", spec.name, reason="condition is false")
            return
    if spec.traits.waits_for_signal:
        w.update(spec.name, status=StepStatus.WAITING, attempt=attempt)
        signal = spec.signal or ""
        if signal in w.signals:
            data = w.signals.pop(signal)
            w.audit("signal.consumed", spec.name, attempt, signal=signal)
            succeed(w, spec, data)
            return
        w.set_timer(TimerKind.SIGNAL_TIMEOUT, spec.name, attempt, spec.timeout_ms or 0)
        w.audit("step.waiting", spec.name, attempt, signal=signal)
        w.publish("step.waiting", spec.name, signal=signal)
        return
    try:
        payload = evaluate_mapping(spec.input, w.context, f"{spec.name}.input")
    except DefinitionError as exc:
        w.update(spec.name, attempt=attempt)
        give_up(w, spec, error(EXPRESSION_ERROR, exc.message, spec.name, attempt))
        return
    w.update(spec.name, input=payload)
    w.send_command(spec, attempt)


def succeed(w: Work, spec: Step, output: dict[str, Any]) -> None:
    """Record a step's success (a reply or a signal) and move on."""
    st = w.st(spec.name)
    if w.status is SagaStatus.COMPENSATING:
        # An in-flight sibling being awaited: it took effect, so it will be compensated.
        w.update(spec.name, status=StepStatus.SUCCEEDED, output=output, finished_at=w.now)
        w.complete(spec.name)
        w.audit("step.succeeded", spec.name, st.attempt, late=True)
        w.publish("step.completed", spec.name, attempt=st.attempt)
        advance_compensation(w)
        return
    if spec.traits.pivot:
        w.pivot_passed = True
        w.audit("pivot.passed", spec.name)
    try:
        mapped = evaluate_mapping(spec.output, output, f"{spec.name}.output")
    except DefinitionError as exc:
        failure = error(EXPRESSION_ERROR, exc.message, spec.name, st.attempt)
        if w.pivot_passed or w.status is not SagaStatus.RUNNING:
            give_up(w, spec, failure)
            return
        # The step did take effect, so it completes (and will be compensated).
        w.update(spec.name, status=StepStatus.SUCCEEDED, output=output, finished_at=w.now)
        w.complete(spec.name)
        w.audit("step.succeeded", spec.name, st.attempt, output_mapping_failed=failure.message)
        w.publish("step.completed", spec.name, attempt=st.attempt)
        begin_compensation(w, StatusTrigger.STEP_FAILED, failure)
        return
    w.context.update(mapped)
    w.update(spec.name, status=StepStatus.SUCCEEDED, output=output, finished_at=w.now)
    w.complete(spec.name)
    w.audit("step.succeeded", spec.name, st.attempt, context_updates=sorted(mapped))
    w.publish("step.completed", spec.name, attempt=st.attempt)
    advance(w)


def forward_failure(
    w: Work,
    spec: Step,
    failure: ErrorInfo,
    *,
    retriable: bool,
    retry_after_ms: int | None,
    timed_out: bool,
) -> None:
    """A command attempt failed (or timed out): retry per policy, or give up."""
    st = w.st(spec.name)
    if timed_out:
        st = w.update(spec.name, uncertain=True)
    w.update(spec.name, last_error=failure)
    if w.status is SagaStatus.COMPENSATING:
        # An in-flight sibling being awaited: no retries any more.
        give_up(w, spec, failure)
        return
    delay = retry_delay(
        spec.retry,
        budget_attempt=st.attempt - st.retry_base,
        error_code=None if timed_out else failure.code,
        # A retriable step's contract is to be retried until it succeeds.
        retriable=retriable or timed_out or spec.traits.retries_forever,
        retry_after_ms=retry_after_ms,
        seed=jitter_seed(w.original.saga_id, spec.name, st.attempt, "command"),
    )
    if delay is None:
        give_up(w, spec, failure)
        return
    w.audit("step.retry_scheduled", spec.name, st.attempt, delay_ms=delay, code=failure.code)
    w.publish("step.retrying", spec.name, attempt=st.attempt, delay_ms=delay, code=failure.code)
    if delay == 0:
        w.send_command(spec, st.attempt + 1)
    else:
        w.update(spec.name, status=StepStatus.RETRY_SCHEDULED)
        w.set_timer(TimerKind.RETRY_DUE, spec.name, st.attempt + 1, delay)


def signal_timed_out(w: Work, spec: Step) -> None:
    """A wait step's signal did not come: continue or fail as the step says."""
    st = w.st(spec.name)
    if spec.on_timeout is OnTimeout.CONTINUE:
        w.update(spec.name, status=StepStatus.SKIPPED, finished_at=w.now)
        w.audit("step.skipped", spec.name, st.attempt, reason="signal timed out")
        w.publish("step.skipped", spec.name, reason="signal timed out")
        advance(w)
        return
    failure = error(SIGNAL_TIMEOUT, f"signal {spec.signal!r} did not arrive", spec.name, st.attempt)
    w.update(spec.name, last_error=failure)
    give_up(w, spec, failure)


def give_up(w: Work, spec: Step, failure: ErrorInfo) -> None:
    """The step failed for good: compensate (before the pivot) or get stuck (after)."""
    st = w.st(spec.name)
    status = StepStatus.TIMED_OUT if st.uncertain else StepStatus.FAILED
    w.update(spec.name, status=status, last_error=failure, finished_at=w.now)
    if st.uncertain:
        w.complete(spec.name)  # outcome unknown: compensate it like a completed step
    w.audit("step.failed", spec.name, st.attempt, code=failure.code, message=failure.message)
    w.publish("step.failed", spec.name, attempt=st.attempt, code=failure.code)
    if w.status is SagaStatus.COMPENSATING:
        advance_compensation(w)
    elif w.status is SagaStatus.RUNNING:
        if w.pivot_passed or (spec.traits.pivot and st.uncertain):
            go_stuck(w, spec.name, failure)
        else:
            begin_compensation(w, StatusTrigger.STEP_FAILED, failure)


def go_stuck(w: Work, step: str, failure: ErrorInfo, *, compensation: bool = False) -> None:
    """Stop and wait for an operator."""
    w.move(StatusTrigger.COMPENSATION_STUCK if compensation else StatusTrigger.STEP_STUCK)
    w.stuck_step = step
    w.stuck_in = "compensation" if compensation else "forward"
    w.last_error = failure
    w.publish("saga.stuck", step, code=failure.code, message=failure.message, stuck_in=w.stuck_in)


def cancel_deadline(w: Work) -> None:
    """Cancel the saga deadline timer, if the saga has one."""
    if w.original.deadline_at is not None:
        w.cancel_timer(TimerKind.DEADLINE)


# -- backwards --------------------------------------------------------------------------


def begin_compensation(w: Work, trigger: StatusTrigger, failure: ErrorInfo) -> None:
    """Switch to compensating: abandon what has not been sent yet, then compensate."""
    w.move(trigger)
    w.failure = failure
    w.stuck_step = w.stuck_in = None
    w.publish("saga.compensating", failure.step, code=failure.code, message=failure.message)
    for name, st in list(w.steps.items()):
        if st.status is StepStatus.RETRY_SCHEDULED:
            w.cancel_timer(TimerKind.RETRY_DUE, name, st.attempt + 1)
        elif st.status is StepStatus.WAITING:
            w.cancel_timer(TimerKind.SIGNAL_TIMEOUT, name, st.attempt)
        elif not (st.status is StepStatus.RUNNING and st.deferred):
            continue
        w.update(name, status=StepStatus.CANCELLED, deferred=False, finished_at=w.now)
        w.audit("step.cancelled", name, st.attempt)
        if st.uncertain:
            w.complete(name)
    advance_compensation(w)


def advance_compensation(w: Work) -> None:
    """Send the next compensation, or finish, once nothing forward is in flight."""
    if w.status is not SagaStatus.COMPENSATING or w.forward_in_flight():
        return
    busy = {CompensationStatus.RUNNING, CompensationStatus.RETRY_SCHEDULED}
    if any(st.compensation in busy for st in w.steps.values()):
        return
    for name in reversed(w.completion):
        spec, st = w.specs[name], w.st(name)
        if spec.traits.compensatable and st.sent and st.compensation is CompensationStatus.NONE:
            w.send_compensation(spec, st.compensation_attempt + 1)
            return
    w.move(StatusTrigger.COMPENSATIONS_DONE)
    cancel_deadline(w)
    w.publish("saga.compensated", reason=w.failure.code if w.failure else None)


def compensation_succeeded(w: Work, spec: Step) -> None:
    """A compensation completed: record it and go on with the next one."""
    st = w.st(spec.name)
    w.update(spec.name, compensation=CompensationStatus.COMPENSATED)
    w.compensations.append(spec.name)
    w.audit("compensation.succeeded", spec.name, st.compensation_attempt)
    w.publish("compensation.completed", spec.name, attempt=st.compensation_attempt)
    advance_compensation(w)


def compensation_failure(
    w: Work, spec: Step, failure: ErrorInfo, *, retriable: bool, retry_after_ms: int | None
) -> None:
    """A compensation attempt failed (or timed out): retry per policy, or get stuck."""
    st = w.update(spec.name, last_error=failure)
    attempt = st.compensation_attempt
    delay = retry_delay(
        spec.compensation_retry,
        budget_attempt=attempt - st.compensation_retry_base,
        error_code=None if failure.code == TIMEOUT else failure.code,
        retriable=retriable,
        retry_after_ms=retry_after_ms,
        seed=jitter_seed(w.original.saga_id, spec.name, attempt, "compensation"),
    )
    if delay is None:
        w.update(spec.name, compensation=CompensationStatus.FAILED)
        w.audit("compensation.failed", spec.name, attempt, code=failure.code)
        go_stuck(w, spec.name, failure, compensation=True)
        return
    w.audit("compensation.retry_scheduled", spec.name, attempt, delay_ms=delay)
    if delay == 0:
        w.send_compensation(spec, attempt + 1)
    else:
        w.update(spec.name, compensation=CompensationStatus.RETRY_SCHEDULED)
        w.set_timer(TimerKind.COMPENSATION_RETRY_DUE, spec.name, attempt + 1, delay)
