"""The auditor's fold of lifecycle events into a saga record (services/audit/_fold.py)."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from _events import trip_event

from contracts import Envelope
from services.audit import fold_event

SID = uuid4()


def ev(type_: str, revision: int, step: str | None = None, **payload: Any) -> Envelope:
    return trip_event(SID, type_, revision, step, **payload)


def fold(events: list[Envelope], record: dict[str, Any] | None = None):
    outcomes = []
    for e in events:
        record, outcome = fold_event(record, e)
        if outcome:
            outcomes.append(outcome)
    return record, outcomes


RUN = [
    ev("saga.started", 1),
    ev("step.started", 1, "a"),
    ev("step.completed", 2, "a"),
    ev("step.started", 2, "b"),
    ev("step.failed", 3, "b"),
    ev("saga.compensating", 3, "b"),
    ev("compensation.started", 3, "a"),
    ev("compensation.completed", 4, "a"),
    ev("saga.compensated", 4),
]


def test_a_run_folds_into_status_steps_and_one_outcome() -> None:
    record, outcomes = fold(RUN)
    assert record["saga_id"] == str(SID)
    assert record["status"] == "compensated"
    assert record["steps"] == ["a"]
    assert record["compensated"] == ["a"]
    assert record["revision"] == 4
    assert outcomes == ["compensated"]


def test_replayed_events_change_nothing_and_count_nothing_twice() -> None:
    record, _ = fold(RUN)
    # An aborted relay transaction seen before its committed re-publication.
    again, outcomes = fold(RUN, record)
    assert outcomes == []
    assert again["status"] == "compensated"
    assert again["steps"] == ["a"]
    assert again["compensated"] == ["a"]


def test_the_status_follows_outcome_events_not_the_payload() -> None:
    # Without saga.completed the saga is not completed, whatever other events say.
    record, outcomes = fold(
        [ev("saga.started", 1), ev("step.completed", 2, "a", status="completed")]
    )
    assert record["status"] == "running"
    assert outcomes == []


def test_operator_actions_carry_the_status_they_left() -> None:
    record, outcomes = fold(
        [
            ev("saga.started", 1),
            ev("saga.stuck", 2, "a"),
            ev("operator.action", 3, "a", status="running", action="operator.retry_step"),
            ev("step.completed", 4, "a"),
            ev("saga.completed", 4),
        ]
    )
    assert record["status"] == "completed"
    assert outcomes == ["stuck", "completed"]


def test_a_saga_first_seen_mid_way_has_unknown_status() -> None:
    record, _ = fold([ev("step.completed", 3, "a")])
    assert record["status"] == "unknown"
    assert UUID(record["saga_id"]) == SID
