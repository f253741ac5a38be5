"""Per-key locks in the engine: a saga with a lock waits queued until the store grants it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from saga.definition import RetryPolicy, SagaBuilder, SagaDefinition, compensatable, pivot
from saga.engine import (
    Decision,
    OperatorAbort,
    OperatorRetryStep,
    SagaState,
    SagaStatus,
    StartSaga,
    StepFailed,
    StepSucceeded,
    TimerFired,
    TimerKind,
    transition,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SID = UUID("01890000-0000-7000-8000-0000000000aa")
ONCE = RetryPolicy(max_attempts=1)


def transfer(**lock: object) -> SagaDefinition:
    return (
        SagaBuilder("transfer", deadline_ms=60_000, **lock)  # type: ignore[arg-type]
        .add(
            compensatable(
                "debit",
                participant="ledger",
                command="ledger.debit",
                compensation="ledger.credit",
                retry=ONCE,
                compensation_retry=ONCE,
            )
        )
        .add(pivot("notify", participant="mail", command="mail.send", retry=ONCE))
        .build()
    )


def start(defn: SagaDefinition, data: dict[str, object]) -> Decision:
    return transition(None, StartSaga(saga_id=SID, input=data), defn, T0)


def then(
    state: SagaState | None, event: object, defn: SagaDefinition, after_s: int = 1
) -> Decision:
    assert state is not None
    return transition(state, event, defn, T0 + timedelta(seconds=after_s))  # type: ignore[arg-type]


def granted() -> TimerFired:
    return TimerFired(timer=TimerKind.LOCK_GRANTED)


def test_a_saga_with_a_lock_waits_queued_then_runs_when_granted() -> None:
    defn = transfer(lock="account_id", lock_timeout_ms=30_000)
    d = start(defn, {"account_id": 42})
    assert d.state is not None
    assert d.state.status is SagaStatus.QUEUED
    assert d.state.lock_key == "transfer:42"
    assert d.commands == (), "nothing runs before the lock is granted"
    assert [(lk.action, lk.key) for lk in d.locks] == [("wait", "transfer:42")]
    assert [t.kind for t in d.timers_set] == [TimerKind.LOCK_TIMEOUT]
    assert d.state.deadline_at is None, "the deadline counts from the start of the work"
    assert [e.type for e in d.events] == ["saga.queued"]

    d = then(d.state, granted(), defn, after_s=10)
    assert d.state is not None
    assert d.state.status is SagaStatus.RUNNING
    assert [c.envelope.type for c in d.commands] == ["ledger.debit"]
    assert d.state.deadline_at == T0 + timedelta(seconds=70)
    assert [t.kind for t in d.timers_cancelled] == [TimerKind.LOCK_TIMEOUT]
    assert "saga.started" in [e.type for e in d.events]
    assert d.locks == ()

    d = then(d.state, StepSucceeded(step="debit", attempt=1), defn)
    assert d.locks == ()
    d = then(d.state, StepSucceeded(step="notify", attempt=1), defn)
    assert d.state is not None
    assert d.state.status is SagaStatus.COMPLETED
    assert [(lk.action, lk.key) for lk in d.locks] == [("release", "transfer:42")]
    assert d.state.lock_key is None, "let go"


def test_a_queued_saga_ignores_replies_and_times_out_or_is_aborted() -> None:
    defn = transfer(lock="account_id", lock_timeout_ms=30_000)
    queued = start(defn, {"account_id": "a-1"}).state
    stray = then(queued, StepSucceeded(step="debit", attempt=1), defn)
    assert stray.outcome == "ignored"
    assert stray.reason is not None
    assert "waits for its lock" in stray.reason

    timed_out = then(queued, TimerFired(timer=TimerKind.LOCK_TIMEOUT), defn, after_s=31)
    assert timed_out.state is not None
    assert timed_out.state.status is SagaStatus.ABORTED
    assert timed_out.state.abort_reason is not None
    assert "lock timeout" in timed_out.state.abort_reason
    assert [(lk.action, lk.key) for lk in timed_out.locks] == [("release", "transfer:a-1")]
    late = then(timed_out.state, granted(), defn, after_s=32)
    assert late.outcome == "ignored", "a grant after the timeout changes nothing"

    aborted = then(queued, OperatorAbort(reason="not needed", actor="ops"), defn)
    assert aborted.state is not None
    assert aborted.state.status is SagaStatus.ABORTED
    assert [(lk.action, lk.key) for lk in aborted.locks] == [("release", "transfer:a-1")]


def test_the_lock_is_released_on_compensation_and_by_default_kept_while_stuck() -> None:
    defn = transfer(lock="account_id")
    running = then(start(defn, {"account_id": 7}).state, granted(), defn).state
    failed = then(running, StepSucceeded(step="debit", attempt=1), defn)
    failed = then(failed.state, StepFailed(step="notify", attempt=1, code="x"), defn)
    assert failed.state is not None
    assert failed.state.status is SagaStatus.COMPENSATING
    assert failed.locks == ()
    stuck = then(failed.state, StepFailed(step="debit", attempt=1, code="y"), defn)
    assert stuck.state is not None
    assert stuck.state.status is SagaStatus.STUCK
    assert stuck.locks == (), "a stuck saga keeps its lock unless told otherwise"

    released = transfer(lock="account_id", lock_release="final_or_stuck")
    running = then(start(released, {"account_id": 7}).state, granted(), released).state
    failed = then(running, StepSucceeded(step="debit", attempt=1), released)
    failed = then(failed.state, StepFailed(step="notify", attempt=1, code="x"), released)
    stuck = then(failed.state, StepFailed(step="debit", attempt=1, code="y"), released)
    assert [(lk.action, lk.key) for lk in stuck.locks] == [("release", "transfer:7")]
    again = then(stuck.state, OperatorRetryStep(step="debit", actor="ops", reason="r"), released)
    assert again.outcome == "applied"
    assert again.state is not None
    attempt = again.state.steps["debit"].compensation_attempt
    reply = StepSucceeded(step="debit", attempt=attempt, compensation=True)
    done = then(again.state, reply, released)
    assert done.state is not None
    assert done.state.status is SagaStatus.COMPENSATED
    assert done.locks == (), "released once, when it got stuck"


@pytest.mark.parametrize("data", [{}, {"account_id": None}, {"account_id": {"nested": 1}}])
def test_a_start_without_a_lock_key_is_refused(data: dict[str, object]) -> None:
    d = start(transfer(lock="account_id"), data)
    assert d.outcome == "rejected"
    assert d.state is None
    assert d.reason is not None
    assert "found no key" in d.reason


def test_a_saga_without_a_lock_is_unchanged() -> None:
    d = start(transfer(), {"account_id": 1})
    assert d.state is not None
    assert d.state.status is SagaStatus.RUNNING
    assert d.locks == ()
    assert d.state.lock_key is None
