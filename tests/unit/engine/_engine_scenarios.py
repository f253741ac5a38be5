"""A tiny script language for readable engine scenario tables.

Each line of a script is one event, in terms of the *current* state (so ``ok a`` answers
whatever attempt of ``a`` is in flight):

    ok STEP[@N]             success reply (attempt N, default current)
    fail STEP[@N] [CODE] [retriable] [after=MS]
    comp-ok STEP[@N]        compensation success reply
    comp-fail STEP [retriable]
    timeout STEP[@N]        step timeout timer
    retry STEP              retry back-off timer (attempt current + 1)
    comp-timeout STEP       compensation timeout timer
    comp-retry STEP         compensation back-off timer
    signal-timeout STEP     wait step timeout timer
    deadline                saga deadline timer
    granted | lock-timeout  lock timers of a queued saga
    signal NAME             external signal
    abort | resume | mark-compensated | op-retry STEP | op-skip STEP
    pause PARTICIPANT       open the participant's circuit (no event)
    unpause PARTICIPANT     close it and deliver ParticipantResumed
    again                   deliver the previous event again
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from saga.definition import (
    OnTimeout,
    RetryPolicy,
    SagaBuilder,
    SagaDefinition,
    compensatable,
    pivot,
    retriable,
    wait,
)
from saga.engine import (
    Decision,
    Event,
    OperatorAbort,
    OperatorMarkCompensated,
    OperatorResume,
    OperatorRetryStep,
    OperatorSkipStep,
    ParticipantResumed,
    SagaState,
    SignalReceived,
    StartSaga,
    StepFailed,
    StepSucceeded,
    TimerFired,
    TimerKind,
    transition,
)

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SAGA_ID = UUID("01890000-0000-7000-8000-000000000001")

FAST = RetryPolicy(max_attempts=2, initial_delay_ms=100, backoff=2, max_delay_ms=1000, jitter=0)
ONCE = RetryPolicy(max_attempts=1)
FOREVER = RetryPolicy(max_attempts=None, initial_delay_ms=100, max_delay_ms=1000, jitter=0)


def _comp(name: str, **kw: Any) -> Any:
    kw.setdefault("retry", FAST)
    kw.setdefault("compensation_retry", FAST)
    kw.setdefault("timeout_ms", 1000)
    return compensatable(
        name,
        participant=f"svc_{name}",
        command=f"{name}.do",
        compensation=f"{name}.undo",
        input={"id": "order_id"},
        output={f"{name}_out": "value"},
        **kw,
    )


def linear_saga(*, deadline_ms: int | None = 60_000) -> SagaDefinition:
    """``a -> b -> p (pivot) -> r (retriable)``."""
    return (
        SagaBuilder("linear", deadline_ms=deadline_ms)
        .add(_comp("a"), _comp("b"))
        .add(
            pivot(
                "p",
                participant="svc_p",
                command="p.do",
                retry=FAST,
                timeout_ms=1000,
                input={"id": "order_id"},
            ),
            retriable(
                "r",
                participant="svc_r",
                command="r.do",
                retry=FOREVER,
                timeout_ms=1000,
                input={"id": "order_id", "b": "b_out"},
            ),
        )
        .build()
    )


def branching_saga() -> SagaDefinition:
    """``a -> [b || c] -> approve (wait, if big) -> p (pivot) -> [r1 || r2]``."""
    return (
        SagaBuilder("branching", deadline_ms=60_000)
        .add(_comp("a"))
        .parallel("grp", [_comp("b"), _comp("c")])
        .add(
            wait(
                "approve",
                signal="approval",
                timeout_ms=5_000,
                when="big",
                output={"approved_by": "who"},
            )
        )
        .add(pivot("p", participant="svc_p", command="p.do", retry=FAST, timeout_ms=1000))
        .parallel(
            "finish",
            [
                retriable("r1", participant="svc_r1", command="r1.do", retry=FOREVER),
                retriable("r2", participant="svc_r2", command="r2.do", retry=FOREVER),
            ],
        )
        .build()
    )


def continue_saga() -> SagaDefinition:
    """``a -> optional (wait, continue on timeout) -> b``."""
    return (
        SagaBuilder("cont")
        .add(
            _comp("a"),
            wait("optional", signal="hint", timeout_ms=1000, on_timeout=OnTimeout.CONTINUE),
            _comp("b"),
        )
        .build()
    )


SAGA_TIMERS = {
    "deadline": TimerKind.DEADLINE,
    "granted": TimerKind.LOCK_GRANTED,
    "lock-timeout": TimerKind.LOCK_TIMEOUT,
}
"""Script verbs of the timers of the saga as a whole."""


@dataclass
class Run:
    """Plays a script against one definition, keeping every decision."""

    definition: SagaDefinition
    input: dict[str, Any] = field(default_factory=lambda: {"order_id": "o-1"})
    state: SagaState | None = None
    now: datetime = T0
    paused: set[str] = field(default_factory=set)
    decisions: list[Decision] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def apply(self, event: Event) -> Decision:
        self.now += timedelta(seconds=1)
        decision = transition(
            self.state, event, self.definition, self.now, paused=frozenset(self.paused)
        )
        self.decisions.append(decision)
        self.events.append(event)
        if decision.state is not None:
            self.state = decision.state
        return decision

    def start(self) -> Decision:
        return self.apply(StartSaga(saga_id=SAGA_ID, input=self.input))

    def play(self, script: list[str] | str) -> Run:
        lines = script.split(";") if isinstance(script, str) else script
        for line in lines:
            if line.strip():
                self.line(line.strip())
        return self

    @property
    def last(self) -> Decision:
        return self.decisions[-1]

    def _attempt(self, step: str, given: str | None, compensation: bool = False) -> int:
        if given is not None:
            return int(given)
        assert self.state is not None
        st = self.state.steps[step]
        return max(1, st.compensation_attempt if compensation else st.attempt)

    def line(self, line: str) -> Decision:
        words = line.split()
        verb, args = words[0], words[1:]
        step, _, at = args[0].partition("@") if args else ("", "", "")
        attempt = at or None
        flags = set(args[1:])
        if verb == "start":
            return self.start()
        if verb == "again":
            return self.apply(self.events[-1])
        if verb == "pause":
            self.paused.add(args[0])
            return self.last
        if verb == "unpause":
            self.paused.discard(args[0])
            return self.apply(ParticipantResumed(participant=args[0]))
        event: Event
        if verb == "ok":
            value = f"{step}-value"
            event = StepSucceeded(
                step=step, attempt=self._attempt(step, attempt), output={"value": value}
            )
        elif verb == "fail":
            codes = [f for f in args[1:] if f not in {"retriable"} and "=" not in f]
            after = next((int(f[6:]) for f in args[1:] if f.startswith("after=")), None)
            event = StepFailed(
                step=step,
                attempt=self._attempt(step, attempt),
                code=codes[0] if codes else "x.failed",
                retriable="retriable" in flags,
                retry_after_ms=after,
            )
        elif verb == "comp-ok":
            event = StepSucceeded(
                step=step, attempt=self._attempt(step, attempt, True), compensation=True
            )
        elif verb == "comp-fail":
            event = StepFailed(
                step=step,
                attempt=self._attempt(step, attempt, True),
                code="x.undo_failed",
                retriable="retriable" in flags,
                compensation=True,
            )
        elif verb in {"timeout", "signal-timeout", "comp-timeout"}:
            kind = {
                "timeout": TimerKind.STEP_TIMEOUT,
                "signal-timeout": TimerKind.SIGNAL_TIMEOUT,
                "comp-timeout": TimerKind.COMPENSATION_TIMEOUT,
            }[verb]
            comp = verb == "comp-timeout"
            event = TimerFired(timer=kind, step=step, attempt=self._attempt(step, attempt, comp))
        elif verb in {"retry", "comp-retry"}:
            comp = verb == "comp-retry"
            kind = TimerKind.COMPENSATION_RETRY_DUE if comp else TimerKind.RETRY_DUE
            event = TimerFired(
                timer=kind, step=step, attempt=self._attempt(step, attempt, comp) + 1
            )
        elif verb in SAGA_TIMERS:
            event = TimerFired(timer=SAGA_TIMERS[verb])
        elif verb == "signal":
            event = SignalReceived(name=args[0], data={"who": "alice"})
        elif verb == "abort":
            event = OperatorAbort(reason="test")
        elif verb == "resume":
            event = OperatorResume(reason="test")
        elif verb == "mark-compensated":
            event = OperatorMarkCompensated(reason="test")
        elif verb == "op-retry":
            event = OperatorRetryStep(step=step, reason="test")
        elif verb == "op-skip":
            event = OperatorSkipStep(step=step, reason="test")
        else:
            raise ValueError(f"unknown script verb {verb!r}")
        return self.apply(event)

    # -- what happened ------------------------------------------------------------------

    def sent(self) -> list[str]:
        """Every command and compensation sent, as ``do:a@1`` / ``undo:a@1``."""
        out = []
        for decision in self.decisions:
            for cmd in decision.commands:
                verb = "undo" if cmd.envelope.kind.value == "compensation" else "do"
                out.append(f"{verb}:{cmd.envelope.step}@{cmd.envelope.attempt}")
        return out

    def undone(self) -> list[str]:
        """The steps whose compensation was sent, first attempts only, in order."""
        return [
            s.split(":")[1].split("@")[0]
            for s in self.sent()
            if s.startswith("undo:") and s.endswith("@1")
        ]

    @property
    def status(self) -> str:
        assert self.state is not None
        return self.state.status.value


def run(definition: SagaDefinition, script: str, **input: Any) -> Run:
    """Start a saga of ``definition`` and play ``script`` (lines separated by ``;``)."""
    r = Run(definition, input={"order_id": "o-1", **input})
    r.start()
    return r.play(script)
