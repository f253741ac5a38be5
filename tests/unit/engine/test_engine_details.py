"""Details of decisions: payloads, timers, ids, context, stuck bookkeeping, totality."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest
from _engine_scenarios import FOREVER, SAGA_ID, T0, Run, branching_saga, linear_saga, run

from contracts import MessageKind
from saga.definition import RetryPolicy, SagaBuilder, compensatable, pivot, retriable
from saga.engine import (
    TRANSITIONS,
    CompensationStatus,
    SagaStatus,
    StartSaga,
    StatusTrigger,
    StepStatus,
    StepSucceeded,
    TimerFired,
    TimerKey,
    TimerKind,
    transition,
)

LINEAR = linear_saga()


def test_start_sends_roots_and_sets_deadline() -> None:
    r = Run(LINEAR)
    d = r.start()
    assert d.outcome == "applied"
    assert r.state is not None
    assert r.state.revision == 1
    assert r.state.definition_hash == LINEAR.content_hash
    [cmd] = d.commands
    assert cmd.topic == "svc_a.commands"
    assert cmd.participant == "svc_a"
    env = cmd.envelope
    assert (env.kind, env.type, env.step, env.attempt) == (MessageKind.COMMAND, "a.do", "a", 1)
    assert env.payload == {"id": "o-1"}
    assert env.saga_id == SAGA_ID
    assert (env.saga_type, env.saga_version) == ("linear", 1)
    assert env.occurred_at == r.now
    kinds = {(t.kind, t.step, t.attempt): t.due_at for t in d.timers_set}
    assert kinds == {
        (TimerKind.DEADLINE, "", 1): r.now + timedelta(seconds=60),
        (TimerKind.STEP_TIMEOUT, "a", 1): r.now + timedelta(seconds=1),
    }
    assert [e.type for e in d.events] == ["saga.started", "step.started"]


def test_reply_cancels_timeout_and_merges_output() -> None:
    r = run(LINEAR, "")
    d = r.line("ok a")
    assert TimerKey(kind=TimerKind.STEP_TIMEOUT, step="a", attempt=1) in d.timers_cancelled
    assert r.state is not None
    assert r.state.context == {"order_id": "o-1", "a_out": "a-value"}
    assert r.state.completion_order == ("a",)


def test_input_mapping_reads_the_context() -> None:
    r = run(LINEAR, "ok a; ok b; ok p")
    assert r.last.commands[0].envelope.payload == {"id": "o-1", "b": "b-value"}


def test_compensation_payload_is_input_plus_output() -> None:
    r = run(LINEAR, "ok a; fail b")
    [cmd] = r.last.commands
    env = cmd.envelope
    assert (env.kind, env.type, env.step, env.attempt) == (
        MessageKind.COMPENSATION,
        "a.undo",
        "a",
        1,
    )
    assert env.payload == {"id": "o-1", "output": {"value": "a-value"}}
    assert r.state is not None
    assert r.state.failure is not None
    assert r.state.failure.code == "x.failed"


def test_timed_out_step_compensation_has_null_output() -> None:
    r = run(LINEAR, "ok a; timeout b; retry b; timeout b")
    assert r.last.commands[0].envelope.payload == {"id": "o-1", "output": None}
    assert r.state is not None
    assert r.state.steps["b"].status is StepStatus.TIMED_OUT
    assert r.state.steps["b"].uncertain


def test_retry_backoff_and_retry_after() -> None:
    r = run(LINEAR, "ok a")
    d = r.line("fail b retriable")
    [timer] = d.timers_set
    assert (timer.kind, timer.step, timer.attempt) == (TimerKind.RETRY_DUE, "b", 2)
    assert timer.due_at == r.now + timedelta(milliseconds=100)  # FAST: 100ms, no jitter
    r = run(LINEAR, "ok a")
    d = r.line("fail b retriable after=5000")
    assert d.timers_set[0].due_at == r.now + timedelta(milliseconds=5000)


def test_paused_participant_defers_without_timer_or_attempt() -> None:
    r = run(LINEAR, "pause svc_b")
    d = r.line("ok a")
    assert d.commands == ()
    assert all(t.kind is not TimerKind.STEP_TIMEOUT for t in d.timers_set)
    assert r.state is not None
    st = r.state.steps["b"]
    assert (st.status, st.deferred, st.sent, st.attempt) == (StepStatus.RUNNING, True, False, 1)
    d = r.line("unpause svc_b")
    assert [c.envelope.attempt for c in d.commands] == [1]
    assert [t.kind for t in d.timers_set] == [TimerKind.STEP_TIMEOUT]


def test_paused_compensation_is_deferred() -> None:
    r = run(LINEAR, "pause svc_a; ok a; fail b")
    assert r.sent() == ["do:a@1", "do:b@1"]
    assert r.state is not None
    assert r.state.steps["a"].compensation_deferred
    r.play("unpause svc_a; comp-ok a")
    assert r.status == "compensated"


def test_deferred_forward_command_is_dropped_on_compensation() -> None:
    r = run(branching_saga(), "pause svc_c; ok a; fail b")
    assert r.state is not None
    assert r.state.steps["c"].status is StepStatus.CANCELLED
    assert r.undone() == ["a"]  # c was never sent, so it is not compensated


def test_stuck_records_step_and_error() -> None:
    r = run(LINEAR, "ok a; fail b; comp-fail a")
    s = r.state
    assert s is not None
    assert s.status is SagaStatus.STUCK
    assert (s.stuck_step, s.stuck_in) == ("a", "compensation")
    assert s.last_error is not None
    assert s.last_error.code == "x.undo_failed"
    assert s.steps["a"].compensation is CompensationStatus.FAILED
    assert "saga.stuck" in [e.type for e in r.last.events]


def test_operator_retry_gives_a_fresh_budget() -> None:
    r = run(LINEAR, "ok a; fail b; comp-fail a; op-retry a")
    assert r.sent()[-1] == "undo:a@2"
    r.play("comp-fail a retriable")  # budget attempt 1 of 2: retried
    assert r.status == "compensating"
    r.play("comp-retry a; comp-fail a retriable")
    assert r.status == "stuck"


def test_post_pivot_step_that_gives_up_is_stuck_then_skipped() -> None:
    limited = RetryPolicy(max_attempts=None, retriable_codes=("x.busy",), jitter=0)
    defn = (
        SagaBuilder("post")
        .add(
            compensatable("a", participant="s", command="a.do", compensation="a.undo"),
            pivot("p", participant="s", command="p.do"),
            retriable("r", participant="s", command="r.do", retry=limited),
            retriable("r2", participant="s", command="r2.do", retry=FOREVER),
        )
        .build()
    )
    r = run(defn, "ok a; ok p; fail r x.busy; retry r; fail r x.bad")
    assert r.status == "stuck"
    assert r.state is not None
    assert (r.state.stuck_step, r.state.stuck_in) == ("r", "forward")
    assert r.undone() == []
    r.play("op-skip r; ok r2")
    assert r.status == "completed"


def test_runtime_expression_error_fails_the_step() -> None:
    defn = (
        SagaBuilder("expr")
        .add(
            compensatable("a", participant="s", command="a.do", compensation="a.undo"),
            compensatable(
                "b",
                participant="s",
                command="b.do",
                compensation="b.undo",
                input={"n": "length(order_id)"},
            ),
        )
        .build()
    )
    r = run(defn, "ok a", order_id=42)  # length() of a number: a JMESPath type error
    assert r.status == "compensating"
    assert r.state is not None
    assert r.state.steps["b"].status is StepStatus.FAILED
    assert r.state.steps["b"].last_error is not None
    assert r.state.steps["b"].last_error.code == "saga.expression_error"
    assert r.undone() == ["a"]


def test_wait_output_merged_into_context() -> None:
    r = run(branching_saga(), "ok a; ok b; ok c; signal approval", big=True)
    assert r.state is not None
    assert r.state.context["approved_by"] == "alice"


def test_status_changes_are_audited_against_the_table() -> None:
    r = run(LINEAR, "ok a; fail b; comp-fail a; op-retry a; comp-ok a")
    changes = [e.detail for d in r.decisions for e in d.audit if e.kind == "status.changed"]
    assert [(c["from"], c["to"]) for c in changes] == [
        ("running", "compensating"),
        ("compensating", "stuck"),
        ("stuck", "compensating"),
        ("compensating", "compensated"),
    ]
    for c in changes:
        assert TRANSITIONS[SagaStatus(c["from"])][StatusTrigger(c["trigger"])] == SagaStatus(
            c["to"]
        )


def test_transition_is_deterministic() -> None:
    script = "ok a; fail b retriable; retry b; timeout b; retry b; fail b; comp-ok a"
    one, two = run(LINEAR, script), run(LINEAR, script)
    assert [d.model_dump() for d in one.decisions] == [d.model_dump() for d in two.decisions]


def test_message_ids_are_uuid7_shaped_and_time_ordered() -> None:
    r = run(LINEAR, "ok a; ok b")
    ids = [c.envelope.message_id for d in r.decisions for c in d.commands]
    assert all(i.version == 7 for i in ids)
    assert ids == sorted(ids, key=lambda u: u.int >> 80)
    assert len(set(ids)) == len(ids)
    ms = ids[0].int >> 80
    assert ms == int((T0 + timedelta(seconds=1)).timestamp() * 1000)


def test_causation_id_is_the_triggering_message() -> None:
    r = run(LINEAR, "")
    reply_id = UUID("01890000-0000-7000-8000-0000000000aa")
    d = r.apply(StepSucceeded(step="a", attempt=1, message_id=reply_id))
    assert d.commands[0].envelope.causation_id == reply_id


def test_compensation_inferred_from_causation_id() -> None:
    r = run(LINEAR, "ok a; fail b")
    assert r.state is not None
    comp_id = r.state.steps["a"].compensation_message_id
    d = r.apply(StepSucceeded(step="a", attempt=1, causation_id=comp_id))
    assert d.outcome == "applied"
    assert r.status == "compensated"


def test_no_state_and_not_start_is_dead_lettered() -> None:
    d = transition(None, TimerFired(timer=TimerKind.DEADLINE), LINEAR, T0)
    assert (d.outcome, d.state) == ("dead_letter", None)


def test_wrong_definition_is_dead_lettered() -> None:
    r = run(LINEAR, "")
    other = branching_saga()
    d = transition(r.state, StepSucceeded(step="a", attempt=1), other, T0)
    assert d.outcome == "dead_letter"
    assert d.state == r.state


def test_reply_for_a_wait_step_is_dead_lettered() -> None:
    r = run(branching_saga(), "ok a; ok b; ok c", big=True)
    assert r.line("ok approve").outcome == "dead_letter"


def test_start_is_idempotent() -> None:
    first = transition(None, StartSaga(saga_id=SAGA_ID), LINEAR, T0)
    again = transition(first.state, StartSaga(saga_id=SAGA_ID), LINEAR, T0)
    assert again.outcome == "ignored"
    assert again.state == first.state


def test_state_round_trips_through_json() -> None:
    r = run(branching_saga(), "ok a; fail b; timeout c", big=True)
    assert r.state is not None
    again = type(r.state).model_validate_json(r.state.model_dump_json())
    assert again == r.state


@pytest.mark.parametrize(
    ("script", "reason_part"),
    [
        pytest.param("ok a; ok b; abort", "pivot", id="abort once the pivot was sent"),
        pytest.param("ok a; fail b; deadline", "compensating", id="deadline while compensating"),
    ],
)
def test_refusal_reasons(script: str, reason_part: str) -> None:
    r = run(LINEAR, script)
    assert r.last.outcome in {"ignored", "rejected"}
    assert r.last.reason is not None
    assert reason_part in r.last.reason


def test_a_reply_to_a_compensation_is_audited_as_one() -> None:
    r = run(LINEAR, "ok a; fail b")
    assert r.last.audit[0].kind == "event.step_failed", "b's own reply"
    r.play("comp-fail a retriable")
    assert r.last.audit[0].kind == "event.compensation_failed"
    assert r.last.audit[0].step == "a"
    r.play("comp-retry a; comp-ok a")
    assert r.last.audit[0].kind == "event.compensation_succeeded"
    assert r.status == "compensated"


def test_a_step_that_succeeded_after_a_failure_shows_no_last_error() -> None:
    from saga.operations import open_error

    r = run(LINEAR, "fail a retriable")
    assert r.state is not None
    assert open_error(r.state.steps["a"]) is not None, "shown while the step is retrying"
    r.play("retry a; ok a")
    assert r.state.steps["a"].last_error is not None, "the engine keeps it"
    assert open_error(r.state.steps["a"]) is None, "the view does not show it as current"
    r.play("fail b; comp-fail a retriable")
    assert open_error(r.state.steps["a"]) is not None, "a failing compensation shows"
    r.play("comp-retry a; comp-ok a")
    assert open_error(r.state.steps["a"]) is None
