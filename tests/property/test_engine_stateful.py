"""The engine as a state machine: any order of replies, timers, duplicates and operators.

Hypothesis delivers replies (current and stale attempts), timers (due, stale and
cancelled ones), signals, the deadline, redeliveries of past events, circuit-breaker
pauses and operator commands in any order, and checks after every decision:

* compensations run in exact reverse completion order;
* no step is compensated twice;
* the pivot and steps after it are never compensated (and nothing is compensated once
  the pivot has completed);
* a step is compensated only if its command was sent;
* terminal statuses are absorbing;
* replaying any event is a no-op;
* every status change is in the table, and non-applied decisions change nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from contracts import MessageKind
from saga.definition import (
    RetryPolicy,
    SagaBuilder,
    SagaDefinition,
    StepKind,
    compensatable,
    descendants,
    pivot,
    retriable,
    wait,
)
from saga.engine import (
    TERMINAL,
    TRANSITIONS,
    CompensationStatus,
    Decision,
    Event,
    OperatorAbort,
    OperatorMarkCompensated,
    OperatorResume,
    OperatorRetryStep,
    OperatorSkipStep,
    ParticipantResumed,
    SagaState,
    SagaStatus,
    SignalReceived,
    StartSaga,
    StatusTrigger,
    StepFailed,
    StepStatus,
    StepSucceeded,
    TimerFired,
    TimerKind,
    transition,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
SMALL = RetryPolicy(max_attempts=2, initial_delay_ms=10, max_delay_ms=100, jitter=0.5)
QUICK = RetryPolicy(max_attempts=3, initial_delay_ms=0, max_delay_ms=0)
FOREVER = RetryPolicy(max_attempts=None, initial_delay_ms=10, max_delay_ms=100)


def _comp(name: str, participant: str, **kw: Any) -> Any:
    kw.setdefault("retry", SMALL)
    kw.setdefault("compensation_retry", SMALL)
    return compensatable(
        name,
        participant=participant,
        command=f"{name}.do",
        compensation=f"{name}.undo",
        input={"id": "id"},
        output={name: "v"},
        **kw,
    )


BRANCHING = (
    SagaBuilder("branching", deadline_ms=60_000)
    .add(_comp("a", "alpha", timeout_ms=100))
    .parallel(
        "grp",
        [
            _comp("b", "beta", timeout_ms=100),
            _comp("c", "gamma", retry=QUICK, compensation_retry=QUICK),
            _comp("d", "beta", when="big", timeout_ms=100),
        ],
    )
    .add(wait("approve", signal="approval", timeout_ms=1000, when="big"))
    .add(pivot("p", participant="alpha", command="p.do", retry=SMALL, timeout_ms=100))
    .parallel(
        "finish",
        [
            retriable(
                "r1",
                participant="gamma",
                command="r1.do",
                retry=RetryPolicy(max_attempts=None, retriable_codes=("busy",)),
                timeout_ms=100,
            ),
            retriable("r2", participant="beta", command="r2.do", retry=FOREVER),
        ],
    )
    .build()
)

LINEAR = (
    SagaBuilder("linear")
    .add(
        _comp("a", "alpha", timeout_ms=100),
        _comp("b", "beta"),
        wait("hint", signal="hint", timeout_ms=100, on_timeout="continue"),  # type: ignore[arg-type]
        _comp("c", "gamma", timeout_ms=100),
    )
    .build()
)

DEFINITIONS = [BRANCHING, LINEAR]
MOSTLY_OK = st.sampled_from([True, True, True, False])  # so sagas get far enough to fail late
PARTICIPANTS = ["alpha", "beta", "gamma"]
SIGNALS = ["approval", "hint", "unknown"]


def _expected_compensations(
    completed: list[str], state: SagaState, defn: SagaDefinition
) -> list[str]:
    kinds = {s.name: s.kind for s in defn.steps}
    return [
        n for n in reversed(completed) if kinds[n] is StepKind.COMPENSATABLE and state.steps[n].sent
    ]


class SagaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.defn: SagaDefinition = BRANCHING
        self.state: SagaState | None = None
        self.now = T0
        self.paused: set[str] = set()
        self.events: list[Event] = []
        self.sent: list[tuple[str, int, bool, UUID]] = []  # step, attempt, compensation, id
        self.timers: list[tuple[TimerKind, str, int]] = []
        self.forward_sent: set[str] = set()
        self.compensations_sent: list[str] = []  # first attempts, in order
        # The test's own record of completion order, from the audit trail (not the state):
        # successes, and steps given up or cancelled with an unknown (timed-out) outcome.
        self.completed: list[str] = []
        self.marked = False
        self.pivot_descendants: set[str] = set()

    # -- driving ----------------------------------------------------------------------

    @initialize(defn=st.sampled_from(DEFINITIONS), big=st.booleans())
    def start(self, defn: SagaDefinition, big: bool) -> None:
        self.defn = defn
        pivot_step = defn.pivot
        if pivot_step is not None:
            self.pivot_descendants = descendants(defn, pivot_step.name) | {pivot_step.name}
        self.apply(StartSaga(saga_id=UUID(int=1), input={"id": "x", "big": big}))

    def apply(self, event: Event) -> Decision:
        self.now += timedelta(milliseconds=250)
        old = self.state
        decision = transition(old, event, self.defn, self.now, paused=frozenset(self.paused))
        self.check_decision(old, decision)
        if decision.state is not None:
            again = transition(
                decision.state, event, self.defn, self.now, paused=frozenset(self.paused)
            )
            assert again.outcome != "applied", f"replaying {event.type} changed the saga"
            assert again.state == decision.state
            assert again.commands == ()
        self.record(old, decision)
        self.events.append(event)
        return decision

    def record(self, old: SagaState | None, decision: Decision) -> None:
        for out in decision.commands:
            env = out.envelope
            assert env.step is not None
            comp = env.kind is MessageKind.COMPENSATION
            self.sent.append((env.step, env.attempt, comp, env.message_id))
            if comp:
                if env.step not in self.compensations_sent:
                    self.compensations_sent.append(env.step)
            else:
                self.forward_sent.add(env.step)
        self.timers.extend((t.kind, t.step, t.attempt) for t in decision.timers_set)
        if decision.state is not None:
            self.state = decision.state
            for entry in decision.audit:
                name = entry.step
                if name is None or name in self.completed:
                    continue
                if entry.kind == "step.succeeded" or (
                    entry.kind in ("step.failed", "step.cancelled")
                    and self.state.steps[name].uncertain
                ):
                    self.completed.append(name)
        if any(
            e.kind == "status.changed"
            and e.detail["trigger"] == StatusTrigger.OPERATOR_MARK_COMPENSATED
            for e in decision.audit
        ):
            self.marked = True

    @precondition(lambda self: self.state is not None)
    @rule(data=st.data(), ok=MOSTLY_OK, retriable=st.booleans())
    def reply_to_in_flight(self, data: st.DataObject, ok: bool, retriable: bool) -> None:
        assert self.state is not None
        waiting = [
            (name, s.attempt, False)
            for name, s in self.state.steps.items()
            if s.status is StepStatus.RUNNING and not s.deferred
        ] + [
            (name, s.compensation_attempt, True)
            for name, s in self.state.steps.items()
            if s.compensation is CompensationStatus.RUNNING and not s.compensation_deferred
        ]
        if not waiting:
            return
        step, attempt, comp = data.draw(st.sampled_from(waiting))
        self.reply(data, step, attempt, comp, ok=ok, retriable=retriable)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data(), ok=st.booleans(), retriable=st.booleans())
    def reply_to_any_sent(self, data: st.DataObject, ok: bool, retriable: bool) -> None:
        step, attempt, comp, _ = data.draw(st.sampled_from(self.sent))
        self.reply(data, step, attempt, comp, ok=ok, retriable=retriable)

    def reply(
        self, data: st.DataObject, step: str, attempt: int, comp: bool, *, ok: bool, retriable: bool
    ) -> None:
        # Sometimes say which message is answered only through causation_id.
        flag: bool | None = data.draw(st.sampled_from([comp, None]))
        cause = next(
            (m for s, a, c, m in reversed(self.sent) if (s, a, c) == (step, attempt, comp)), None
        )
        if ok:
            self.apply(
                StepSucceeded(
                    step=step,
                    attempt=attempt,
                    output={"v": 1},
                    compensation=flag,
                    causation_id=cause,
                )
            )
        else:
            self.apply(
                StepFailed(
                    step=step,
                    attempt=attempt,
                    code=data.draw(st.sampled_from(["busy", "bad"])),
                    retriable=retriable,
                    retry_after_ms=data.draw(st.sampled_from([None, 0, 50])),
                    compensation=flag,
                    causation_id=cause,
                )
            )

    @precondition(lambda self: bool(self.timers))
    @rule(data=st.data())
    def fire_timer(self, data: st.DataObject) -> None:
        kind, step, attempt = data.draw(st.sampled_from(self.timers))
        self.apply(TimerFired(timer=kind, step=step, attempt=attempt))

    @precondition(lambda self: self.state is not None)
    @rule(name=st.sampled_from(SIGNALS))
    def signal(self, name: str) -> None:
        self.apply(SignalReceived(name=name, data={"who": "op"}))

    @precondition(lambda self: bool(self.events))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        self.apply(data.draw(st.sampled_from(self.events)))

    @precondition(lambda self: self.state is not None)
    @rule(data=st.data(), action=st.sampled_from(["abort", "retry", "skip", "mark", "resume"]))
    def operator(self, data: st.DataObject, action: str) -> None:
        assert self.state is not None
        names = [s.name for s in self.defn.steps]
        if self.state.stuck_step is not None:
            names.append(self.state.stuck_step)
        step = data.draw(st.sampled_from(names))
        events: dict[str, Event] = {
            "abort": OperatorAbort(reason="r"),
            "retry": OperatorRetryStep(step=step),
            "skip": OperatorSkipStep(step=step),
            "mark": OperatorMarkCompensated(),
            "resume": OperatorResume(),
        }
        self.apply(events[action])

    @precondition(lambda self: self.state is not None)
    @rule(participant=st.sampled_from(PARTICIPANTS))
    def pause(self, participant: str) -> None:
        self.paused.add(participant)

    @precondition(lambda self: bool(self.paused))
    @rule(data=st.data())
    def unpause(self, data: st.DataObject) -> None:
        participant = data.draw(st.sampled_from(sorted(self.paused)))
        self.paused.discard(participant)
        self.apply(ParticipantResumed(participant=participant))

    @precondition(lambda self: self.state is not None)
    @rule()
    def reply_for_unknown_step(self) -> None:
        decision = self.apply(StepSucceeded(step="nope", attempt=1))
        assert decision.outcome == "dead_letter"

    # -- per-decision checks ----------------------------------------------------------

    def check_decision(self, old: SagaState | None, d: Decision) -> None:
        if d.outcome != "applied":
            assert d.state == old, "a non-applied decision changed the state"
            assert d.commands == ()
            assert d.timers_set == ()
            assert d.events == ()
            assert d.reason
            return
        assert d.state is not None
        new = d.state
        if old is not None:
            assert old.status not in TERMINAL, f"terminal {old.status} left"
            assert new.revision == old.revision + 1
        else:
            assert new.revision == 1
        # every status change is in the table, chained from the old to the new status
        status = old.status if old is not None else SagaStatus.RUNNING
        for entry in d.audit:
            if entry.kind != "status.changed":
                continue
            src, dst = SagaStatus(entry.detail["from"]), SagaStatus(entry.detail["to"])
            assert src is status
            assert TRANSITIONS[src][StatusTrigger(entry.detail["trigger"])] is dst
            status = dst
        assert status is new.status, "status changed outside the table"
        for out in d.commands:
            env = out.envelope
            assert env.step is not None
            if env.kind is not MessageKind.COMPENSATION:
                continue
            spec = self.defn.step(env.step)
            assert spec.kind is StepKind.COMPENSATABLE
            assert env.step not in self.pivot_descendants, "pivot or post-pivot compensated"
            assert old is not None
            assert not old.pivot_passed, "compensation after the pivot completed"
            assert env.step in self.forward_sent or any(
                o.envelope.step == env.step and o.envelope.kind is MessageKind.COMMAND
                for o in d.commands
            ), f"{env.step} compensated but never sent"
            assert old.steps[env.step].compensation not in (
                CompensationStatus.COMPENSATED,
                CompensationStatus.SKIPPED,
            ), f"{env.step} compensated twice"

    def teardown(self) -> None:
        # Coverage statistics (pytest --hypothesis-show-statistics).
        if self.state is not None:
            event(f"final status: {self.state.status}")
            event(f"compensations sent: {min(len(self.compensations_sent), 3)}")

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def compensations_in_reverse_completion_order(self) -> None:
        if self.state is None:
            return
        assert list(self.state.completion_order) == self.completed
        expected = _expected_compensations(self.completed, self.state, self.defn)
        done = list(self.state.compensation_order)
        assert len(set(done)) == len(done), "a step compensated twice"
        assert done == expected[: len(done)], f"compensated {done}, expected {expected}"
        sent = self.compensations_sent
        assert sent == expected[: len(sent)], f"compensations sent {sent}, expected {expected}"
        if self.state.status is SagaStatus.COMPENSATED and not self.marked:
            assert done == expected

    @invariant()
    def one_compensation_at_a_time_after_siblings(self) -> None:
        if self.state is None:
            return
        steps = self.state.steps.values()
        busy = [
            s
            for s in steps
            if s.compensation in (CompensationStatus.RUNNING, CompensationStatus.RETRY_SCHEDULED)
        ]
        assert len(busy) <= 1, "more than one compensation at a time"
        if busy:
            assert not any(s.status is StepStatus.RUNNING and not s.deferred for s in steps), (
                "compensating while a forward step is still in flight"
            )

    @invariant()
    def completed_means_every_step_done(self) -> None:
        if self.state is not None and self.state.status is SagaStatus.COMPLETED:
            assert all(
                s.status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
                for s in self.state.steps.values()
            )
            assert self.state.compensation_order == ()

    @invariant()
    def stuck_names_its_step(self) -> None:
        if self.state is not None and self.state.status is SagaStatus.STUCK:
            assert self.state.stuck_step is not None
            assert self.state.stuck_in in ("forward", "compensation")
            assert self.state.last_error is not None


SagaMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineStateMachine = SagaMachine.TestCase
