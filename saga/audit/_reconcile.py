"""Reconcile the coordinator's database with an independent auditor's view.

Theory of operation
-------------------
The coordinator's database says what happened to each saga (its status, and which
steps completed and were compensated, in order). The auditor (``services/audit``) says
the same thing as told by the lifecycle events on the events topic. Both are brought to
one shape, :class:`SagaOutcome`, and :func:`reconcile` (pure) lists every place where
they disagree: a saga only one side knows, a different status, a different sequence of
completed steps or of compensated steps.

The step sequence on the database side is the saga state's completion order, limited
to steps that *succeeded* (a timed-out step is in the completion order so that it gets
compensated, but no ``step.completed`` event was published for it); the compensation
sequence is the compensation order limited to steps that were *compensated* (an
operator's skip is not a ``compensation.completed`` event).

With ``settled_only`` a saga is compared only when at least one side says it settled
(completed, compensated, aborted or stuck): sagas still in flight on both sides are
where the auditor lags by design.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from saga.engine import CompensationStatus, SagaState, StepStatus

SETTLED: Final = frozenset({"completed", "compensated", "aborted", "stuck"})
"""Statuses in which a saga waits for nothing but (perhaps) an operator."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SagaOutcome:
    """What happened to one saga, as one side tells it."""

    saga_id: str
    """The saga."""
    saga_type: str
    """Name of its definition."""
    status: str
    """Its (latest known) status."""
    steps: tuple[str, ...] = ()
    """Steps that completed, in the order they completed."""
    compensated: tuple[str, ...] = ()
    """Steps that were compensated, in the order they were compensated."""

    @classmethod
    def from_state(cls, state: SagaState) -> SagaOutcome:
        """The database's side: derived from the saga's stored state."""
        steps = state.steps
        return cls(
            saga_id=str(state.saga_id),
            saga_type=state.saga_type,
            status=str(state.status),
            steps=tuple(
                n
                for n in state.completion_order
                if n in steps and steps[n].status is StepStatus.SUCCEEDED
            ),
            compensated=tuple(
                n
                for n in state.compensation_order
                if n in steps and steps[n].compensation is CompensationStatus.COMPENSATED
            ),
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SagaOutcome:
        """The auditor's side: one saga of its ``/outcomes`` or ``/sagas/{id}`` answer.

        Raises:
            ValueError: A field is missing or has the wrong type.
        """
        try:
            return cls(
                saga_id=str(data["saga_id"]),
                saga_type=str(data["saga_type"]),
                status=str(data["status"]),
                steps=tuple(str(s) for s in data.get("steps", ())),
                compensated=tuple(str(s) for s in data.get("compensated", ())),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a saga outcome: {exc!r} in {dict(data)!r}") from exc

    def to_json(self) -> dict[str, Any]:
        """This outcome as JSON (the auditor's wire format)."""
        return {
            "saga_id": self.saga_id,
            "saga_type": self.saga_type,
            "status": self.status,
            "steps": list(self.steps),
            "compensated": list(self.compensated),
        }


class DiscrepancyKind(StrEnum):
    """How the two views disagree about a saga."""

    MISSING_IN_AUDITOR = "missing_in_auditor"
    """The database has the saga; the auditor never saw an event of it."""
    MISSING_IN_DATABASE = "missing_in_database"
    """The auditor saw events of a saga the database does not have."""
    STATUS = "status"
    """The two views name different statuses."""
    STEPS = "steps"
    """The completed steps differ (which, or their order)."""
    COMPENSATIONS = "compensations"
    """The compensated steps differ (which, or their order)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Discrepancy:
    """One disagreement between the database and the auditor about one saga."""

    saga_id: str
    """The saga."""
    saga_type: str
    """Its definition name (from whichever side knows it)."""
    kind: DiscrepancyKind
    """How the views disagree."""
    database: str | None
    """The database's value (``None`` when it does not know the saga)."""
    auditor: str | None
    """The auditor's value (``None`` when it does not know the saga)."""

    @property
    def detail(self) -> str:
        """A sentence for humans."""
        if self.kind is DiscrepancyKind.MISSING_IN_AUDITOR:
            return f"the auditor has no record of this saga (database: {self.database})"
        if self.kind is DiscrepancyKind.MISSING_IN_DATABASE:
            return f"the database has no such saga (auditor: {self.auditor})"
        return f"{self.kind}: database says {self.database}, auditor says {self.auditor}"

    def to_json(self) -> dict[str, Any]:
        """This discrepancy as JSON."""
        return {
            "saga_id": self.saga_id,
            "saga_type": self.saga_type,
            "kind": str(self.kind),
            "database": self.database,
            "auditor": self.auditor,
            "detail": self.detail,
        }


def _seq(names: tuple[str, ...]) -> str:
    return " > ".join(names) if names else "(none)"


def reconcile(
    db_view: Mapping[str, SagaOutcome],
    auditor_view: Mapping[str, SagaOutcome],
    *,
    settled_only: bool = False,
) -> list[Discrepancy]:
    """Every discrepancy between the database's and the auditor's view (pure).

    Args:
        db_view: Saga id -> outcome, from the coordinator's database.
        auditor_view: Saga id -> outcome, from the auditor.
        settled_only: Skip sagas that neither side says have settled (see the module
            docstring).

    Returns:
        The discrepancies, by saga id and then kind; empty when the views agree.
    """
    found: list[Discrepancy] = []
    for saga_id in sorted(db_view.keys() | auditor_view.keys()):
        db, aud = db_view.get(saga_id), auditor_view.get(saga_id)
        if settled_only and not any(o is not None and o.status in SETTLED for o in (db, aud)):
            continue
        if db is None or aud is None:
            known = db or aud
            if known is None:  # in neither view: cannot happen, the ids come from the views
                continue
            found.append(
                Discrepancy(
                    saga_id=saga_id,
                    saga_type=known.saga_type,
                    kind=(
                        DiscrepancyKind.MISSING_IN_DATABASE
                        if db is None
                        else DiscrepancyKind.MISSING_IN_AUDITOR
                    ),
                    database=db.status if db is not None else None,
                    auditor=aud.status if aud is not None else None,
                )
            )
            continue
        pairs = (
            (DiscrepancyKind.STATUS, db.status, aud.status),
            (DiscrepancyKind.STEPS, _seq(db.steps), _seq(aud.steps)),
            (DiscrepancyKind.COMPENSATIONS, _seq(db.compensated), _seq(aud.compensated)),
        )
        found.extend(
            Discrepancy(
                saga_id=saga_id, saga_type=db.saga_type, kind=kind, database=ours, auditor=theirs
            )
            for kind, ours, theirs in pairs
            if ours != theirs
        )
    return found
