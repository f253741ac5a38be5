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
# Keys of the inner dicts are *triggers*: the reason for a change, finer than the event
# type (one event type, e.g. a failed reply, may retry, compensate or get stuck).
TRANSITIONS: Final[Mapping[SagaStatus, Mapping[str, SagaStatus]]] = {
    QUEUED: {
        "lock_granted": RUNNING,
        "lock_timeout": ABORTED,
        "operator_abort": ABORTED,
    },
    RUNNING: {
        "steps_completed": COMPLETED,
        "step_failed": COMPENSATING,
        "deadline_expired": COMPENSATING,
        "operator_abort": COMPENSATING,
        "step_stuck": STUCK,
    },
    COMPENSATING: {
        "compensations_done": COMPENSATED,
        "compensation_stuck": STUCK,
    },
    STUCK: {
        "operator_retry_step": RUNNING,
        "operator_skip_step": RUNNING,
        "operator_retry_compensation": COMPENSATING,
        "operator_skip_compensation": COMPENSATING,
        "operator_abort_compensate": COMPENSATING,
        "operator_mark_compensated": COMPENSATED,
        "operator_abort": ABORTED,
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


def next_status(status: SagaStatus, trigger: str) -> SagaStatus:
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
