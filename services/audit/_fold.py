"""Fold lifecycle events into one saga's outcome record (pure; no faust, no I/O).

The auditor trusts nothing but the events topic. A saga's record says what the events
claim: its status (set by the outcome events, see :data:`STATUS_OF`, and by operator
actions, which carry the status they left the saga in), the steps that completed and
the steps that were compensated, in the order their events arrived.

The events topic is read without transactions (faust's consumer is
``read_uncommitted``), so a record of an aborted relay transaction can be seen and then
seen again when the relay re-publishes it. The fold is idempotent against that: a step
is listed once, and an event older (by saga revision) than what the record already
reflects does not move the status back.
"""

from __future__ import annotations

from typing import Any, Final

from contracts import Envelope

STATUS_OF: Final[dict[str, str]] = {
    "saga.queued": "queued",
    "saga.started": "running",
    "saga.compensating": "compensating",
    "saga.completed": "completed",
    "saga.compensated": "compensated",
    "saga.stuck": "stuck",
    "saga.aborted": "aborted",
}
"""The status each outcome event puts a saga in."""

SETTLED: Final = frozenset({"completed", "compensated", "aborted", "stuck"})
"""Statuses counted as outcomes."""

UNKNOWN: Final = "unknown"
"""Status of a saga whose events so far named none (its start was never seen)."""


def new_record(env: Envelope) -> dict[str, Any]:
    """An empty record for the saga of ``env``."""
    return {
        "saga_id": str(env.saga_id),
        "saga_type": env.saga_type,
        "saga_version": env.saga_version,
        "status": UNKNOWN,
        "steps": [],
        "compensated": [],
        "revision": 0,
        "events": 0,
        "last_event": None,
        "updated_at": None,
    }


def _revision(env: Envelope) -> int:
    value = env.payload.get("revision")
    return value if isinstance(value, int) else 0


def fold_event(record: dict[str, Any] | None, env: Envelope) -> tuple[dict[str, Any], str | None]:
    """Apply one lifecycle event to a saga's record.

    Args:
        record: The saga's record so far (``None`` for its first event). Not mutated.
        env: The lifecycle event.

    Returns:
        The new record, and the outcome to count: the settled status this event put the
        saga in, or ``None`` when it settled nothing new.
    """
    rec = dict(record) if record is not None else new_record(env)
    rec["steps"] = list(rec["steps"])
    rec["compensated"] = list(rec["compensated"])
    rec["events"] += 1
    rec["last_event"] = env.type
    rec["updated_at"] = env.occurred_at.isoformat()
    revision = _revision(env)
    if env.type == "step.completed" and env.step and env.step not in rec["steps"]:
        rec["steps"].append(env.step)
    elif env.type == "compensation.completed" and env.step and env.step not in rec["compensated"]:
        rec["compensated"].append(env.step)
    status = STATUS_OF.get(env.type)
    if status is None and env.type.startswith("operator."):
        named = env.payload.get("status")
        status = named if isinstance(named, str) else None
    outcome = None
    if status is not None and revision >= rec["revision"]:
        if status != rec["status"] and status in SETTLED:
            outcome = status
        rec["status"] = status
    rec["revision"] = max(rec["revision"], revision)
    return rec, outcome
