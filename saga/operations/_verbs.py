"""What a caller can ask of a saga, and the engine event each operator verb delivers.

A verb is delivered as an event the coordinator applies later; :func:`dry_run` applies
it to the saga's current state first (:func:`saga.engine.transition`), so a caller is
refused at once what the engine would refuse then.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from saga.definition import SagaDefinition
from saga.engine import (
    Event,
    OperatorAbort,
    OperatorMarkCompensated,
    OperatorResume,
    OperatorRetryStep,
    OperatorSkipStep,
    SagaState,
    transition,
)
from saga.errors import InvalidCommand, TransitionError

REQUESTED = "operator.requested"
"""Audit kind written when a caller asks for a signal, abort or operator verb."""


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


def dry_run(state: SagaState, definition: SagaDefinition, event: Event, now: datetime) -> None:
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
