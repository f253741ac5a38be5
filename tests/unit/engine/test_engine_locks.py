"""Per-key locks in the engine: a saga with a lock waits queued until the store grants it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from _engine_scenarios import Run

from saga.definition import RetryPolicy, SagaBuilder, SagaDefinition, compensatable, pivot
from saga.engine import SagaStatus, TimerKind

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


def account(defn: SagaDefinition, key: object) -> Run:
    return Run(defn, input={"account_id": key})


def test_a_saga_with_a_lock_waits_queued_then_runs_when_granted() -> None:
    r = account(transfer(lock="account_id", lock_timeout_ms=30_000), 42)
    d = r.start()
    assert d.state is not None
    assert d.state.status is SagaStatus.QUEUED
    assert d.state.lock_key == "transfer:42"
    assert d.commands == (), "nothing runs before the lock is granted"
    assert [(lk.action, lk.key) for lk in d.locks] == [("wait", "transfer:42")]
    assert [t.kind for t in d.timers_set] == [TimerKind.LOCK_TIMEOUT]
    assert d.state.deadline_at is None, "the deadline counts from the start of the work"
    assert [e.type for e in d.events] == ["saga.queued"]

    d = r.line("granted")
    assert d.state is not None
    assert d.state.status is SagaStatus.RUNNING
    assert [c.envelope.type for c in d.commands] == ["ledger.debit"]
    assert d.state.deadline_at == r.now + timedelta(seconds=60)
    assert [t.kind for t in d.timers_cancelled] == [TimerKind.LOCK_TIMEOUT]
    assert "saga.started" in [e.type for e in d.events]
    assert d.locks == ()

    assert r.line("ok debit").locks == ()
    d = r.line("ok notify")
    assert d.state is not None
    assert d.state.status is SagaStatus.COMPLETED
    assert [(lk.action, lk.key) for lk in d.locks] == [("release", "transfer:42")]
    assert d.state.lock_key is None, "let go"


def test_a_queued_saga_ignores_replies_and_times_out_or_is_aborted() -> None:
    defn = transfer(lock="account_id", lock_timeout_ms=30_000)
    stray = account(defn, "a-1").play("start; ok debit@1").last
    assert stray.outcome == "ignored"
    assert stray.reason is not None
    assert "waits for its lock" in stray.reason

    timed_out = account(defn, "a-1").play("start; lock-timeout")
    assert timed_out.state is not None
    assert timed_out.state.status is SagaStatus.ABORTED
    assert timed_out.state.abort_reason is not None
    assert "lock timeout" in timed_out.state.abort_reason
    assert [(lk.action, lk.key) for lk in timed_out.last.locks] == [("release", "transfer:a-1")]
    late = timed_out.line("granted")
    assert late.outcome == "ignored", "a grant after the timeout changes nothing"

    aborted = account(defn, "a-1").play("start; abort")
    assert aborted.state is not None
    assert aborted.state.status is SagaStatus.ABORTED
    assert [(lk.action, lk.key) for lk in aborted.last.locks] == [("release", "transfer:a-1")]


def test_the_lock_is_released_on_compensation_and_by_default_kept_while_stuck() -> None:
    r = account(transfer(lock="account_id"), 7).play("start; granted; ok debit")
    failed = r.line("fail notify")
    assert failed.state is not None
    assert failed.state.status is SagaStatus.COMPENSATING
    assert failed.locks == ()
    stuck = r.line("comp-fail debit")
    assert stuck.state is not None
    assert stuck.state.status is SagaStatus.STUCK
    assert stuck.locks == (), "a stuck saga keeps its lock unless told otherwise"

    released = transfer(lock="account_id", lock_release="final_or_stuck")
    r = account(released, 7).play("start; granted; ok debit; fail notify")
    stuck = r.line("comp-fail debit")
    assert [(lk.action, lk.key) for lk in stuck.locks] == [("release", "transfer:7")]
    again = r.line("op-retry debit")
    assert again.outcome == "applied"
    done = r.line("comp-ok debit")
    assert done.state is not None
    assert done.state.status is SagaStatus.COMPENSATED
    assert done.locks == (), "released once, when it got stuck"


@pytest.mark.parametrize("data", [{}, {"account_id": None}, {"account_id": {"nested": 1}}])
def test_a_start_without_a_lock_key_is_refused(data: dict[str, object]) -> None:
    d = Run(transfer(lock="account_id"), input=dict(data)).start()
    assert d.outcome == "rejected"
    assert d.state is None
    assert d.reason is not None
    assert "found no key" in d.reason


def test_a_saga_without_a_lock_is_unchanged() -> None:
    d = account(transfer(), 1).start()
    assert d.state is not None
    assert d.state.status is SagaStatus.RUNNING
    assert d.locks == ()
    assert d.state.lock_key is None
