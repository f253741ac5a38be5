"""The pure reconcile function: every kind of discrepancy, and agreement."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from saga.audit import Discrepancy, DiscrepancyKind, SagaOutcome, reconcile
from saga.engine import CompensationStatus, SagaState, SagaStatus, StepState, StepStatus


def outcome(sid: str, status: str = "completed", steps=("a", "b"), compensated=()) -> SagaOutcome:
    return SagaOutcome(
        saga_id=sid,
        saga_type="trip",
        status=status,
        steps=tuple(steps),
        compensated=tuple(compensated),
    )


def view(*outcomes: SagaOutcome) -> dict[str, SagaOutcome]:
    return {o.saga_id: o for o in outcomes}


def test_identical_views_have_no_discrepancy() -> None:
    both = view(outcome("s1"), outcome("s2", "compensated", ("a",), ("a",)))
    assert reconcile(both, dict(both)) == []
    assert reconcile({}, {}) == []


def test_a_saga_on_one_side_only_is_missing_on_the_other() -> None:
    found = reconcile(view(outcome("s1"), outcome("s2")), view(outcome("s2"), outcome("s3")))
    assert found == [
        Discrepancy(
            saga_id="s1",
            saga_type="trip",
            kind=DiscrepancyKind.MISSING_IN_AUDITOR,
            database="completed",
            auditor=None,
        ),
        Discrepancy(
            saga_id="s3",
            saga_type="trip",
            kind=DiscrepancyKind.MISSING_IN_DATABASE,
            database=None,
            auditor="completed",
        ),
    ]
    assert "auditor has no record" in found[0].detail


def test_status_steps_and_compensations_are_compared_separately() -> None:
    db = view(outcome("s1", "compensated", ("a", "b"), ("b", "a")))
    aud = view(outcome("s1", "compensating", ("b", "a"), ("b",)))
    found = reconcile(db, aud)
    assert [(d.kind, d.database, d.auditor) for d in found] == [
        (DiscrepancyKind.STATUS, "compensated", "compensating"),
        (DiscrepancyKind.STEPS, "a > b", "b > a"),
        (DiscrepancyKind.COMPENSATIONS, "b > a", "b"),
    ]
    assert found[0].to_json()["kind"] == "status"


def test_settled_only_skips_sagas_in_flight_on_both_sides() -> None:
    db = view(
        outcome("s1", "running", ("a",)), outcome("s2", "completed"), outcome("s3", "running")
    )
    aud = view(outcome("s1", "running", ()), outcome("s2", "running"), outcome("s4", "running"))
    kinds = {(d.saga_id, d.kind) for d in reconcile(db, aud, settled_only=True)}
    # s1 lags (both in flight), s3/s4 are unseen in-flight sagas: skipped; s2 settled: compared.
    assert kinds == {("s2", DiscrepancyKind.STATUS)}
    assert len(reconcile(db, aud)) > len(kinds)


def test_database_outcome_counts_only_succeeded_steps_and_real_compensations() -> None:
    now = datetime.now(UTC)
    state = SagaState(
        saga_id=uuid4(),
        saga_type="trip",
        saga_version=1,
        definition_hash="h",
        status=SagaStatus.COMPENSATED,
        context={},
        steps={
            "a": StepState(
                status=StepStatus.SUCCEEDED, compensation=CompensationStatus.COMPENSATED
            ),
            "b": StepState(status=StepStatus.SUCCEEDED, compensation=CompensationStatus.SKIPPED),
            # timed out: in the completion order (to be compensated), but it never completed
            "c": StepState(
                status=StepStatus.TIMED_OUT, compensation=CompensationStatus.COMPENSATED
            ),
        },
        completion_order=("a", "b", "c"),
        compensation_order=("c", "b", "a"),
        created_at=now,
        updated_at=now,
    )
    got = SagaOutcome.from_state(state)
    assert got.status == "compensated"
    assert got.steps == ("a", "b")
    assert got.compensated == ("c", "a")


def test_auditor_json_round_trips_and_rejects_garbage() -> None:
    o = outcome("s1", "stuck", ("a",), ())
    assert SagaOutcome.from_json(o.to_json() | {"revision": 7}) == o
    with pytest.raises(ValueError, match="not a saga outcome"):
        SagaOutcome.from_json({"saga_id": "x"})
