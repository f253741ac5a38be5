"""The saga status table: every allowed status change, in one place.

The engine looks up every status change here and asserts it is listed, so an unlisted
change is a bug that fails loudly in tests. Docs and ``saga graph`` draw this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class SagaStatus(StrEnum):
    """Where a saga is in its life."""

    QUEUED = "queued"
    """Waits for its lock key (the definition's ``lock``): another saga on the same key
    runs. Starts when that one lets the key go; ``aborted`` after the lock timeout."""
    RUNNING = "running"
    """Forward steps are running."""
    COMPENSATING = "compensating"
    """A step failed (or the deadline passed, or an operator aborted): undoing completed steps."""
    COMPLETED = "completed"
    """Every step succeeded or was skipped. Terminal."""
    COMPENSATED = "compensated"
    """Every completed step was compensated (or an operator said so). Terminal."""
    STUCK = "stuck"
    """Cannot go on within policy; waits for an operator (``stuck_step``, ``last_error``)."""
    ABORTED = "aborted"
    """An operator ended a stuck saga without further action. Terminal."""


RUNNING, COMPENSATING, COMPLETED = SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.COMPLETED
COMPENSATED, STUCK, ABORTED = SagaStatus.COMPENSATED, SagaStatus.STUCK, SagaStatus.ABORTED
QUEUED = SagaStatus.QUEUED


class StatusTrigger(StrEnum):
    """Why a saga's status changes: the keys of :data:`TRANSITIONS`.

    Finer than the event type: one event type (a failed reply, say) may retry,
    compensate or get stuck.
    """

    LOCK_GRANTED = "lock_granted"
    """A queued saga got its lock key."""
    LOCK_TIMEOUT = "lock_timeout"
    """A queued saga waited for its lock key too long."""
    STEPS_COMPLETED = "steps_completed"
    """Every step succeeded or was skipped."""
    STEP_FAILED = "step_failed"
    """A step gave up before the pivot."""
    DEADLINE_EXPIRED = "deadline_expired"
    """The saga deadline passed before the pivot was sent."""
    STEP_STUCK = "step_stuck"
    """A step gave up after the pivot (or the pivot's outcome is unknown)."""
    COMPENSATIONS_DONE = "compensations_done"
    """No compensation is left."""
    COMPENSATION_STUCK = "compensation_stuck"
    """A compensation gave up."""
    OPERATOR_ABORT = "operator_abort"
    """An operator aborted (compensating while still possible)."""
    OPERATOR_ABORT_COMPENSATE = "operator_abort_compensate"
    """An operator aborted a saga stuck before the pivot: it compensates."""
    OPERATOR_RETRY_STEP = "operator_retry_step"
    """An operator retried the stuck step."""
    OPERATOR_SKIP_STEP = "operator_skip_step"
    """An operator skipped the stuck step."""
    OPERATOR_RETRY_COMPENSATION = "operator_retry_compensation"
    """An operator retried the stuck compensation."""
    OPERATOR_SKIP_COMPENSATION = "operator_skip_compensation"
    """An operator skipped the stuck compensation."""
    OPERATOR_MARK_COMPENSATED = "operator_mark_compensated"
    """An operator declared the stuck saga compensated."""


# Rules
#
# * A saga starts RUNNING, or QUEUED when its definition declares a lock and another
#   saga may hold the key: it waits, in arrival order, until the lock is granted (then
#   RUNNING), its lock timeout passes or an operator aborts it (ABORTED either way).
#   Steps run along the definition's DAG; it COMPLETES when every step succeeded or was
#   skipped.
# * Before the pivot, a step that fails for good (retries exhausted, a non-retriable
#   error, a timeout after the last attempt, a wait step timing out with on_timeout=fail),
#   the saga deadline, or an operator abort start COMPENSATING. In-flight steps are
#   awaited (or time out) first; then completed steps, including those whose outcome is
#   unknown because they timed out, are compensated one at a time in exact reverse order
#   of completion. When none is left the saga is COMPENSATED.
# * Once the pivot has been sent, the deadline and abort no longer apply; once it has
#   completed, the saga only goes forward: failures are retried, and a step whose policy
#   gives up makes the saga STUCK. A pivot that gives up after a timeout (outcome
#   unknown) makes the saga STUCK too: it cannot be compensated.
# * A compensation that gives up makes the saga STUCK.
# * An operator resolves STUCK: retry (or resume) the stuck step or compensation with a
#   fresh retry budget, skip it (count it as done), mark the saga compensated, or abort.
#   Abort compensates when that is still possible (stuck before the pivot), otherwise
#   it ends the saga ABORTED.
# * COMPLETED, COMPENSATED and ABORTED are terminal: every later event is ignored and
#   every operator command rejected.
#
# Keys of the inner dicts are triggers (:class:`StatusTrigger`).
TRANSITIONS: Final[Mapping[SagaStatus, Mapping[StatusTrigger, SagaStatus]]] = {
    QUEUED: {
        StatusTrigger.LOCK_GRANTED: RUNNING,
        StatusTrigger.LOCK_TIMEOUT: ABORTED,
        StatusTrigger.OPERATOR_ABORT: ABORTED,
    },
    RUNNING: {
        StatusTrigger.STEPS_COMPLETED: COMPLETED,
        StatusTrigger.STEP_FAILED: COMPENSATING,
        StatusTrigger.DEADLINE_EXPIRED: COMPENSATING,
        StatusTrigger.OPERATOR_ABORT: COMPENSATING,
        StatusTrigger.STEP_STUCK: STUCK,
    },
    COMPENSATING: {
        StatusTrigger.COMPENSATIONS_DONE: COMPENSATED,
        StatusTrigger.COMPENSATION_STUCK: STUCK,
    },
    STUCK: {
        StatusTrigger.OPERATOR_RETRY_STEP: RUNNING,
        StatusTrigger.OPERATOR_SKIP_STEP: RUNNING,
        StatusTrigger.OPERATOR_RETRY_COMPENSATION: COMPENSATING,
        StatusTrigger.OPERATOR_SKIP_COMPENSATION: COMPENSATING,
        StatusTrigger.OPERATOR_ABORT_COMPENSATE: COMPENSATING,
        StatusTrigger.OPERATOR_MARK_COMPENSATED: COMPENSATED,
        StatusTrigger.OPERATOR_ABORT: ABORTED,
    },
    COMPLETED: {},
    COMPENSATED: {},
    ABORTED: {},
}
"""Status -> trigger -> next status. Nothing else may change a saga's status."""

TERMINAL: Final = frozenset({COMPLETED, COMPENSATED, ABORTED})
"""Statuses no event leaves."""

INITIAL: Final = frozenset({RUNNING, QUEUED})
"""Statuses a saga starts in (queued: its definition declares a lock)."""


def next_status(status: SagaStatus, trigger: StatusTrigger) -> SagaStatus:
    """Return the status ``trigger`` leads to from ``status``.

    Raises:
        AssertionError: The change is not in :data:`TRANSITIONS` (an engine bug).
    """
    target = TRANSITIONS[status].get(trigger)
    if target is None:
        raise AssertionError(f"status change {status} --{trigger}--> ? is not in the table")
    return target


def table_to_mermaid() -> str:
    """Draw :data:`TRANSITIONS` as a Mermaid ``stateDiagram-v2``."""
    lines = ["stateDiagram-v2", *(f"    [*] --> {status}" for status in sorted(INITIAL))]
    for source, edges in TRANSITIONS.items():
        lines.extend(f"    {source} --> {target}: {trigger}" for trigger, target in edges.items())
    lines.extend(f"    {status} --> [*]" for status in SagaStatus if status in TERMINAL)
    return "\n".join(lines) + "\n"
