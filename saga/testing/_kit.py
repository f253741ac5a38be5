"""Run a saga definition in-process against plain Python handlers, on a fake clock.

Theory of operation: :class:`SagaTest` keeps the saga's state in memory and drives the
pure engine (:func:`saga.engine.transition`) exactly as the coordinator does, with
nothing else in between: no Kafka, no database. Every command the engine sends is
handed at once to the handler registered for its message type (or a scripted failure);
the reply, and every timer the engine sets, go into one queue ordered by due time on a
fake clock. :meth:`SagaTest.run` takes the next item of the queue, moves the clock to
its due time and applies it, until the saga is finished, stuck (it waits for an
operator) or nothing is left to happen. Scripts change what a participant does for
chosen attempts: fail, let the step time out (with or without a late reply), never
answer, answer twice, answer later. Operator verbs (resume, retry, skip, abort, mark
compensated) are applied like the API applies them. Every audit entry the engine writes
is kept with the fake time, so a test can assert on the outcome, the compensation order
and the audit timeline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import inspect
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeAlias
from uuid import UUID

from pydantic import BaseModel, ValidationError

from contracts import Envelope, MessageKind
from saga.definition import SagaDefinition
from saga.engine import (
    TERMINAL,
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
    StepFailed,
    StepState,
    StepSucceeded,
    TimerFired,
    TimerKind,
    derive_message_id,
    transition,
)
from saga.participant import (
    HANDLER_EXCEPTION,
    INVALID_COMMAND,
    NO_REPLY,
    CommandContext,
    Participant,
    ParticipantError,
    reply_message_id,
)

T0: Final = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
"""Where the fake clock starts by default."""

SAGA_ID: Final = UUID("01940000-0000-7000-8000-00000000a11a")
"""The saga id a :class:`SagaTest` uses by default."""

Attempts: TypeAlias = int | Iterable[int] | None
"""Which attempts a script applies to: one attempt (1-based), several, or ``None`` for all."""

Transition: TypeAlias = Callable[..., Decision]
"""A function with the signature of :func:`saga.engine.transition`."""


class SagaTestError(Exception):
    """The test kit was used wrongly, or the saga did not settle within the event limit."""


class OperatorRejected(SagaTestError):
    """An operator verb the engine rejected in the saga's current state (HTTP 409 in the API)."""

    def __init__(self, verb: str, reason: str) -> None:
        super().__init__(f"{verb} rejected: {reason}")
        self.verb = verb
        self.reason = reason


@dataclass(frozen=True)
class Call:
    """What a participant is asked to do: the second argument of a two-argument handler."""

    step: str
    """The step."""
    message_type: str
    """The command's (or compensation's) message type."""
    attempt: int
    """The attempt (of the command, or of the compensation), from 1."""
    compensation: bool
    """Whether this is the step's compensation."""
    payload: dict[str, Any]
    """The payload the engine built from the definition's mapping."""
    envelope: Envelope
    """The whole message."""
    at: datetime
    """The fake clock when it was sent."""


Handler: TypeAlias = Callable[..., Any]
"""``payload -> output`` or ``(payload, call) -> output``, sync or async.

The output is a mapping (or a pydantic model, or ``None`` for an empty output); raise a
:class:`saga.participant.PermanentError` or :class:`saga.participant.RetriableError` to
fail with a code; return :data:`saga.participant.NO_REPLY` to send no reply at all.
"""


@dataclass(frozen=True)
class TimelineEntry:
    """One audit entry the engine wrote, with the fake time it was written at."""

    at: datetime
    """Fake time."""
    kind: str
    """E.g. ``command.sent``, ``event.step_failed``, ``compensation.succeeded``."""
    step: str | None
    """The step concerned."""
    attempt: int | None
    """The attempt concerned."""
    detail: Mapping[str, Any]
    """Everything else the engine recorded."""

    def __str__(self) -> str:
        where = f" {self.step}" if self.step else ""
        at = f"@{self.attempt}" if self.attempt else ""
        return f"{self.at.isoformat(timespec='milliseconds')} {self.kind}{where}{at}"


@dataclass(frozen=True)
class SentCommand:
    """A command or compensation the engine sent to a participant."""

    at: datetime
    """Fake time it was sent."""
    step: str
    """The step."""
    message_type: str
    """Its message type."""
    attempt: int
    """The attempt."""
    compensation: bool
    """Whether it is a compensation."""
    payload: Mapping[str, Any]
    """Its payload."""

    def __str__(self) -> str:
        return f"{self.message_type}@{self.attempt}"


@dataclass(frozen=True)
class SagaResult:
    """A snapshot of a saga under test: its state plus everything that happened so far."""

    definition: SagaDefinition
    """The definition the saga runs."""
    state: SagaState
    """The engine's state."""
    timeline: tuple[TimelineEntry, ...]
    """Every audit entry, in order."""
    commands: tuple[SentCommand, ...]
    """Every command and compensation sent, in order."""
    lifecycle: tuple[str, ...]
    """The lifecycle event types published (``saga.started``, ``step.completed``, ...)."""
    handler_errors: tuple[BaseException, ...]
    """Exceptions handlers raised other than ParticipantError (sent as failure replies)."""
    now: datetime
    """The fake clock."""
    started_at: datetime
    """Fake time the saga started."""
    stalled: bool
    """Not finished, not stuck, and nothing is scheduled: without help it waits forever."""

    @property
    def status(self) -> SagaStatus:
        """The saga status (a string enum: compare with ``"completed"`` etc.)."""
        return self.state.status

    @property
    def is_terminal(self) -> bool:
        """Whether the saga completed, was compensated or was aborted."""
        return self.state.status in TERMINAL

    @property
    def completed(self) -> list[str]:
        """Steps in the order they completed (or gave up with an unknown outcome)."""
        return list(self.state.completion_order)

    @property
    def compensated(self) -> list[str]:
        """Steps in the order their compensation completed (or was skipped)."""
        return list(self.state.compensation_order)

    @property
    def context(self) -> dict[str, Any]:
        """The saga context: the input plus the mapped outputs."""
        return dict(self.state.context)

    @property
    def failure(self) -> str | None:
        """The error code that made the saga compensate, if any."""
        return self.state.failure.code if self.state.failure else None

    @property
    def stuck_step(self) -> str | None:
        """The step (or compensation) the saga is stuck on."""
        return self.state.stuck_step

    @property
    def stuck_in(self) -> Literal["forward", "compensation"] | None:
        """Whether the stuck step's command or its compensation gave up."""
        return self.state.stuck_in

    @property
    def last_error(self) -> str | None:
        """The error code that made the saga stuck."""
        return self.state.last_error.code if self.state.last_error else None

    @property
    def elapsed_ms(self) -> int:
        """Fake milliseconds since the saga started."""
        return int((self.now - self.started_at) / timedelta(milliseconds=1))

    @property
    def timeline_kinds(self) -> list[str]:
        """The timeline's kinds, in order."""
        return [e.kind for e in self.timeline]

    @property
    def sent(self) -> list[str]:
        """Every command and compensation sent, as ``message_type@attempt``."""
        return [str(c) for c in self.commands]

    def step(self, name: str) -> StepState:
        """The engine's state of step ``name``."""
        return self.state.steps[name]

    def attempts(self, step: str, *, compensation: bool = False) -> int:
        """How many times the step's command (or compensation) was sent."""
        return sum(1 for c in self.commands if c.step == step and c.compensation == compensation)

    def entries(self, kind: str, step: str | None = None) -> list[TimelineEntry]:
        """The timeline entries of ``kind`` (and ``step``, when given)."""
        return [e for e in self.timeline if e.kind == kind and (step is None or e.step == step)]

    def format_timeline(self) -> str:
        """The timeline as text, one entry a line (fake time offsets from the start)."""
        lines = []
        for e in self.timeline:
            offset = int((e.at - self.started_at) / timedelta(milliseconds=1))
            where = f" {e.step}" if e.step else ""
            at = f"@{e.attempt}" if e.attempt else ""
            lines.append(f"  +{offset:>7} ms  {e.kind}{where}{at}{_note(e)}")
        return "\n".join(lines)

    # -- assertions ---------------------------------------------------------------------

    def _fail(self, message: str) -> AssertionError:
        return AssertionError(
            f"{message}\nstatus {self.status}; timeline:\n{self.format_timeline()}"
        )

    def assert_status(self, status: str) -> None:
        """Assert the saga's status, showing the timeline when it differs."""
        if self.status != status:
            raise self._fail(f"expected status {status!r}, got {self.status.value!r}")

    def assert_timeline(self, *expected: str | tuple[str, str]) -> None:
        """Assert these entries occur in this order (others may come between).

        Each item is a kind (``"compensation.sent"``) or a ``(kind, step)`` pair.
        """
        position = 0
        entries = self.timeline
        for item in expected:
            kind, step = (item, None) if isinstance(item, str) else item
            while position < len(entries) and not (
                entries[position].kind == kind and (step is None or entries[position].step == step)
            ):
                position += 1
            if position == len(entries):
                raise self._fail(f"timeline lacks {item!r} after the entries before it")
            position += 1

    def assert_compensated_in_reverse_order(self) -> None:
        """Assert the steps that took effect were compensated in reverse completion order.

        "Took effect" includes a compensatable step whose outcome is unknown (timed out).
        """
        expected = compensation_order(self.definition, self.state, self.completed)
        if self.compensated != expected:
            raise self._fail(f"compensated {self.compensated}, expected {expected}")


def compensation_order(
    definition: SagaDefinition, state: SagaState, completed: Iterable[str]
) -> list[str]:
    """The steps of ``completed`` a compensating saga must undo, in the order it must.

    Those whose kind is compensatable and whose command was sent, the last completed first.
    """
    return [
        name
        for name in reversed(list(completed))
        if definition.step(name).traits.compensatable and state.steps[name].sent
    ]


def _note(entry: TimelineEntry) -> str:
    """A short note on what an entry says (status changes, timers, codes)."""
    detail = entry.detail
    if entry.kind == "status.changed":
        return f"  {detail.get('from')} -> {detail.get('to')} ({detail.get('trigger')})"
    event = detail.get("event")
    if isinstance(event, Mapping):
        if event.get("type") == "timer_fired":
            return f"  {event.get('timer')}"
        if "code" in event:
            return f"  {event['code']}"
    if "reason" in detail and entry.kind in {"event.ignored", "operator.rejected"}:
        return f"  ({detail['reason']})"
    return ""


@dataclass(frozen=True)
class _Target:
    step: str
    compensation: bool


@dataclass(frozen=True)
class _Script:
    targets: frozenset[_Target]
    attempts: frozenset[int] | None
    action: str
    """``fail``, ``timeout``, ``late``, ``never``, ``duplicate``, ``delay``."""
    failure: StepFailed | None = None
    copies: int = 1
    delay_ms: int = 0

    def matches(self, target: _Target, attempt: int) -> bool:
        return target in self.targets and (self.attempts is None or attempt in self.attempts)


@dataclass(order=True)
class _Item:
    due: datetime
    seq: int
    event: Event = field(compare=False)
    timer: tuple[TimerKind, str, int] | None = field(default=None, compare=False)
    cancelled: bool = field(default=False, compare=False)


def _attempt_set(attempts: Attempts) -> frozenset[int] | None:
    if attempts is None:
        return None
    values = frozenset([attempts] if isinstance(attempts, int) else attempts)
    if not values or min(values) < 1:
        raise SagaTestError("attempts are counted from 1")
    return values


class SagaTest:
    """A saga of one definition, run in memory against Python handlers on a fake clock.

    Example::

        t = SagaTest(ORDER_PLACEMENT)
        t.handle("inventory.reserve", lambda p: {"reservation_id": "r-1"})
        t.fail("payments.authorize", code="payment.declined")
        result = t.run({"order_id": "o-1", "total_cents": 4200})
        assert result.status == "compensated"
        assert result.compensated == ["reserve_inventory"]

    A command (or compensation) without a handler succeeds with an empty output, unless
    ``strict`` is set (then it is an error). Handlers and scripts are named by message
    type (``payments.authorize``, ``payments.void``) or by step name (the step's command).
    """

    def __init__(
        self,
        definition: SagaDefinition,
        *,
        strict: bool = False,
        start_at: datetime = T0,
        saga_id: UUID = SAGA_ID,
        max_events: int = 10_000,
        engine: Transition = transition,
    ) -> None:
        """Create a test of ``definition``.

        Args:
            definition: The saga definition under test.
            strict: A command without a handler is an error instead of a success.
            start_at: Where the fake clock starts (timezone-aware).
            saga_id: The saga's id (message ids and retry jitter derive from it).
            max_events: Give up (:class:`SagaTestError`) after this many events, e.g.
                a retriable step that fails forever.
            engine: The transition function (the engine's, unless testing a variant).
        """
        if start_at.tzinfo is None:
            raise SagaTestError("start_at must be timezone-aware")
        self.definition = definition
        self.strict = strict
        self.saga_id = saga_id
        self.max_events = max_events
        self._engine = engine
        self._now = start_at
        self._started_at = start_at
        self._state: SagaState | None = None
        self._handlers: dict[_Target, Handler] = {}
        self._scripts: list[_Script] = []
        self._queue: list[_Item] = []
        self._timers: dict[tuple[TimerKind, str, int], _Item] = {}
        self._seq = itertools.count()
        self._early_signals: list[tuple[int, SignalReceived]] = []
        self._paused: set[str] = set()
        self._timeline: list[TimelineEntry] = []
        self._commands: list[SentCommand] = []
        self._lifecycle: list[str] = []
        self._handler_errors: list[BaseException] = []
        self._events = 0
        self._runner: asyncio.Runner | None = None
        self._by_type: dict[str, list[_Target]] = {}
        for step in definition.steps:
            if step.command:
                self._by_type.setdefault(step.command, []).append(_Target(step.name, False))
            if step.compensation:
                self._by_type.setdefault(step.compensation, []).append(_Target(step.name, True))

    # -- participants -------------------------------------------------------------------

    def _targets(self, key: str) -> list[_Target]:
        if key in self._by_type:
            return self._by_type[key]
        if self.definition.has_step(key):
            if self.definition.step(key).traits.waits_for_signal:
                raise SagaTestError(f"step {key!r} waits for a signal: use signal()")
            return [_Target(key, False)]
        known = ", ".join(sorted(self._by_type))
        raise SagaTestError(
            f"{self.definition.name} sends no {key!r}; its message types are {known}"
        )

    def handle(self, key: str, handler: Handler) -> SagaTest:
        """Register ``handler`` for a message type (or a step's command); returns ``self``.

        ``handler(payload)`` or ``handler(payload, call)`` (a :class:`Call`), sync or
        async, returns the output mapping, raises a ParticipantError to fail, or returns
        :data:`saga.participant.NO_REPLY` to send no reply.
        """
        for target in self._targets(key):
            self._handlers[target] = handler
        return self

    def use(self, participant: Participant) -> SagaTest:
        """Handle commands with the handlers registered on an SDK participant.

        Each payload is validated against the handler's model first (a mismatch is a
        ``participant.invalid_command`` failure, as in the SDK); the handler gets a
        :class:`saga.participant.CommandContext` without a database connection
        (``ctx.db`` raises). Message types this definition never sends are left out.
        """
        for message_type, registration in participant.registrations.items():
            for target in self._by_type.get(message_type, []):
                self._handlers[target] = _SdkHandler(participant.name, registration)
        return self

    def _script(self, key: str, attempts: Attempts, action: str, **kw: Any) -> SagaTest:
        targets = frozenset(self._targets(key))
        if action in {"timeout", "late"}:
            for t in targets:
                if self.definition.step(t.step).timeout_ms is None:
                    raise SagaTestError(
                        f"step {t.step!r} has no timeout_ms, so it cannot time out: "
                        "without a reply it waits forever (use never_answer())"
                    )
        self._scripts.append(_Script(targets, _attempt_set(attempts), action, **kw))
        return self

    def fail(
        self,
        key: str,
        code: str = "test.failed",
        message: str = "",
        *,
        retriable: bool = False,
        retry_after_ms: int | None = None,
        attempts: Attempts = None,
    ) -> SagaTest:
        """Answer these attempts with a failure (every attempt by default)."""
        failure = StepFailed(
            step="-",
            attempt=1,
            code=code,
            message=message,
            retriable=retriable,
            retry_after_ms=retry_after_ms,
        )
        return self._script(key, attempts, "fail", failure=failure)

    def timeout(self, key: str, *, attempts: Attempts = None, late_reply: bool = False) -> SagaTest:
        """Lose the reply of these attempts, so the step's timeout fires.

        The handler still runs (the participant did the work). With ``late_reply`` its
        reply arrives just after the timeout fired.
        """
        return self._script(key, attempts, "late" if late_reply else "timeout")

    def never_answer(self, key: str, *, attempts: Attempts = None) -> SagaTest:
        """The participant never sees these attempts: no handler call, no reply."""
        return self._script(key, attempts, "never")

    def duplicate(self, key: str, *, attempts: Attempts = None, copies: int = 1) -> SagaTest:
        """Deliver the reply of these attempts ``1 + copies`` times (a redelivery)."""
        if copies < 1:
            raise SagaTestError("copies must be at least 1")
        return self._script(key, attempts, "duplicate", copies=copies)

    def delay(self, key: str, ms: int, *, attempts: Attempts = None) -> SagaTest:
        """Deliver the reply of these attempts ``ms`` fake milliseconds after the command."""
        if ms < 0:
            raise SagaTestError("a delay is at least 0 ms")
        return self._script(key, attempts, "delay", delay_ms=ms)

    def pause(self, participant: str) -> SagaTest:
        """Open the participant's circuit: its commands are deferred until :meth:`unpause`."""
        self._paused.add(participant)
        return self

    def unpause(self, participant: str) -> SagaResult:
        """Close the participant's circuit, send what was deferred, and run on."""
        self._paused.discard(participant)
        self._require_started()
        self._apply(ParticipantResumed(participant=participant))
        return self.run()

    def signal(
        self, name: str, data: Mapping[str, Any] | None = None, *, after_ms: int = 0
    ) -> SagaTest:
        """Schedule the external signal ``name`` ``after_ms`` from now (or from the start).

        It is delivered by the next :meth:`run` or :meth:`advance`; a signal that arrives
        before its wait step starts is kept by the engine until the step starts.
        """
        if not any(s.traits.waits_for_signal and s.signal == name for s in self.definition.steps):
            raise SagaTestError(f"no step of {self.definition.name} waits for signal {name!r}")
        event = SignalReceived(
            name=name,
            data=dict(data or {}),
            message_id=derive_message_id(self._now, self.saga_id, "signal", name, next(self._seq)),
        )
        if self._state is None:
            self._early_signals.append((after_ms, event))
        else:
            self._push(self._now + timedelta(milliseconds=after_ms), event)
        return self

    # -- driving ------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The fake clock."""
        return self._now

    @property
    def state(self) -> SagaState | None:
        """The saga's current state (``None`` before :meth:`start`)."""
        return self._state

    @property
    def result(self) -> SagaResult:
        """A snapshot of the saga now."""
        state = self._require_started()
        return SagaResult(
            definition=self.definition,
            state=state,
            timeline=tuple(self._timeline),
            commands=tuple(self._commands),
            lifecycle=tuple(self._lifecycle),
            handler_errors=tuple(self._handler_errors),
            now=self._now,
            started_at=self._started_at,
            stalled=state.status in (SagaStatus.RUNNING, SagaStatus.COMPENSATING)
            and self._peek() is None,
        )

    @property
    def pending_timers(self) -> list[tuple[TimerKind, str, int, datetime]]:
        """The timers set and not fired or cancelled: ``(kind, step, attempt, due_at)``."""
        items = sorted(i for i in self._timers.values() if not i.cancelled)
        return [(*i.timer, i.due) for i in items if i.timer is not None]

    def start(self, input: Mapping[str, Any] | None = None) -> SagaResult:
        """Start the saga and handle what is due at once (the clock does not move)."""
        if self._state is not None:
            raise SagaTestError("the saga has already started")
        self._started_at = self._now
        decision = self._apply(StartSaga(saga_id=self.saga_id, input=dict(input or {})))
        if decision.outcome != "applied":
            raise SagaTestError(f"the saga did not start: {decision.reason}")
        for after_ms, event in self._early_signals:
            self._push(self._now + timedelta(milliseconds=after_ms), event)
        self._drain(until=self._now)
        return self.result

    def run(self, input: Mapping[str, Any] | None = None) -> SagaResult:
        """Start the saga (unless started) and run it until it is finished or stuck.

        The clock jumps from one due item (reply, timer, signal) to the next. It also
        stops when nothing is scheduled any more (:attr:`SagaResult.stalled`).
        """
        if self._state is None:
            self.start(input)
        elif input is not None:
            raise SagaTestError("the saga has already started; call run() to go on")
        self._drain(until=None)
        return self.result

    def advance(self, ms: int) -> SagaResult:
        """Move the clock ``ms`` forward, handling everything due meanwhile."""
        self._require_started()
        target = self._now + timedelta(milliseconds=ms)
        self._drain(until=target, stop_when_settled=False)
        self._now = max(self._now, target)
        return self.result

    def fire_next_timer(self) -> TimerFired | None:
        """Jump to the next timer and fire it (handling everything due before it).

        Returns the fired timer, or ``None`` when no timer is set.
        """
        self._require_started()
        timers = [i for i in self._timers.values() if not i.cancelled]
        if not timers:
            return None
        item = min(timers)
        self._drain(until=item.due, stop_when_settled=False)
        return item.event if isinstance(item.event, TimerFired) else None

    def deliver(self, event: Event) -> Decision:
        """Apply any engine event now (advanced use) and return the engine's decision."""
        self._require_started()
        decision = self._apply(event)
        self._drain(until=self._now)
        return decision

    # -- operator verbs -----------------------------------------------------------------

    def _operator(self, verb: str, event: Event) -> SagaResult:
        self._require_started()
        decision = self._apply(event)
        if decision.outcome == "rejected":
            raise OperatorRejected(verb, decision.reason or "")
        return self.run()

    def resume(self, reason: str = "test") -> SagaResult:
        """Operator: retry whatever the stuck saga is stuck on, then run on."""
        return self._operator("resume", OperatorResume(reason=reason))

    def retry_step(self, step: str, reason: str = "test") -> SagaResult:
        """Operator: retry the stuck step (or its compensation) with a fresh budget."""
        return self._operator("retry_step", OperatorRetryStep(step=step, reason=reason))

    def skip_step(self, step: str, reason: str = "test") -> SagaResult:
        """Operator: count the stuck step (or a waiting wait step) as done."""
        return self._operator("skip_step", OperatorSkipStep(step=step, reason=reason))

    def abort(self, reason: str = "test") -> SagaResult:
        """Operator: abort (compensate while still possible, else end aborted)."""
        return self._operator("abort", OperatorAbort(reason=reason))

    def mark_compensated(self, reason: str = "test") -> SagaResult:
        """Operator: declare the stuck saga compensated."""
        return self._operator("mark_compensated", OperatorMarkCompensated(reason=reason))

    # -- machinery ----------------------------------------------------------------------

    def _require_started(self) -> SagaState:
        if self._state is None:
            raise SagaTestError("start the saga first: run(input) or start(input)")
        return self._state

    def _push(
        self, due: datetime, event: Event, timer: tuple[TimerKind, str, int] | None = None
    ) -> _Item:
        item = _Item(due, next(self._seq), event, timer)
        heapq.heappush(self._queue, item)
        return item

    def _peek(self) -> _Item | None:
        while self._queue and self._queue[0].cancelled:
            heapq.heappop(self._queue)
        return self._queue[0] if self._queue else None

    def _drain(self, *, until: datetime | None, stop_when_settled: bool = True) -> None:
        """Apply due items in order; jump the clock up to ``until`` (``None``: no limit).

        With ``stop_when_settled`` the clock does not jump past a finished or stuck saga.
        """
        while True:
            item = self._peek()
            if item is None:
                return
            state = self._state
            settled = state is not None and (state.is_terminal or state.status is SagaStatus.STUCK)
            if item.due > self._now and (
                (until is not None and item.due > until) or (stop_when_settled and settled)
            ):
                return
            heapq.heappop(self._queue)
            if item.timer is not None:
                self._timers.pop(item.timer, None)
            self._now = max(self._now, item.due)
            self._apply(item.event)

    def _apply(self, event: Event) -> Decision:
        self._events += 1
        if self._events > self.max_events:
            raise SagaTestError(
                f"more than {self.max_events} events: the saga does not settle "
                f"(a step that fails forever?)\n{self.result.format_timeline()}"
            )
        decision = self._engine(
            self._state, event, self.definition, self._now, paused=frozenset(self._paused)
        )
        for entry in decision.audit:
            self._timeline.append(
                TimelineEntry(self._now, entry.kind, entry.step, entry.attempt, entry.detail)
            )
        self._lifecycle.extend(e.type for e in decision.events)
        if decision.state is not None:
            self._state = decision.state
        for key in decision.timers_cancelled:
            old = self._timers.pop((key.kind, key.step, key.attempt), None)
            if old is not None:
                old.cancelled = True
        for spec in decision.timers_set:
            key3 = (spec.kind, spec.step, spec.attempt)
            old = self._timers.pop(key3, None)
            if old is not None:
                old.cancelled = True
            timer = TimerFired(
                timer=spec.kind,
                step=spec.step,
                attempt=spec.attempt,
                message_id=derive_message_id(
                    spec.due_at, self.saga_id, "timer", spec.kind.value, spec.step, spec.attempt
                ),
            )
            self._timers[key3] = self._push(spec.due_at, timer, key3)
        for command in decision.commands:
            self._dispatch(command.envelope)
        return decision

    def _dispatch(self, envelope: Envelope) -> None:
        compensation = envelope.kind is MessageKind.COMPENSATION
        step = envelope.step or ""
        target = _Target(step, compensation)
        attempt = envelope.attempt
        self._commands.append(
            SentCommand(self._now, step, envelope.type, attempt, compensation, envelope.payload)
        )
        delivery = next(
            (s for s in self._scripts if s.action != "fail" and s.matches(target, attempt)), None
        )
        if delivery is not None and delivery.action == "never":
            return
        scripted = next(
            (s for s in self._scripts if s.action == "fail" and s.matches(target, attempt)), None
        )
        common: dict[str, Any] = {
            "step": step,
            "attempt": attempt,
            "compensation": compensation,
            "causation_id": envelope.message_id,
            "message_id": reply_message_id(envelope.message_id),
        }
        reply: Event
        if scripted is not None and scripted.failure is not None:
            reply = scripted.failure.model_copy(update=common)
        else:
            call = Call(
                step,
                envelope.type,
                attempt,
                compensation,
                dict(envelope.payload),
                envelope,
                self._now,
            )
            outcome = self._call(target, call)
            if outcome is NO_REPLY:
                return
            reply = (
                outcome.model_copy(update=common)
                if isinstance(outcome, StepFailed)
                else StepSucceeded(output=outcome, **common)
            )
        due = self._now
        copies = 1
        if delivery is not None:
            if delivery.action == "timeout":
                return
            timeout_ms = self.definition.step(step).timeout_ms or 0
            if delivery.action == "late":
                due = self._now + timedelta(milliseconds=timeout_ms + 1)
            elif delivery.action == "delay":
                due = self._now + timedelta(milliseconds=delivery.delay_ms)
            elif delivery.action == "duplicate":
                copies += delivery.copies
        for _ in range(copies):
            self._push(due, reply)

    def _call(self, target: _Target, call: Call) -> dict[str, Any] | StepFailed | Any:
        """Run the handler: its output dict, a failure body, or NO_REPLY."""
        handler = self._handlers.get(target)
        if handler is None:
            if self.strict:
                raise SagaTestError(
                    f"no handler for {call.message_type!r} (step {call.step}); "
                    "register one with handle() or use strict=False"
                )
            return {}
        try:
            if isinstance(handler, _SdkHandler):
                result = self._await(handler(call))
            else:
                result = handler(*_arguments(handler, call))
                if inspect.isawaitable(result):
                    result = self._await(result)
        except ParticipantError as exc:
            return StepFailed(
                step=call.step,
                attempt=call.attempt,
                code=exc.code,
                message=exc.message,
                retriable=exc.retriable,
                retry_after_ms=exc.retry_after_ms,
            )
        except SagaTestError:
            raise
        except Exception as exc:
            self._handler_errors.append(exc)
            return StepFailed(
                step=call.step,
                attempt=call.attempt,
                code=HANDLER_EXCEPTION,
                message=f"{type(exc).__name__}: {exc}",
                retriable=True,
            )
        if result is NO_REPLY:
            return NO_REPLY
        if isinstance(result, StepFailed):
            return result
        if result is None:
            return {}
        if isinstance(result, BaseModel):
            return result.model_dump(mode="json")
        if isinstance(result, Mapping):
            return dict(result)
        raise SagaTestError(
            f"the handler of {call.message_type!r} returned {type(result).__name__}; "
            "return a mapping, a pydantic model, None or NO_REPLY"
        )

    def _await(self, awaitable: Awaitable[Any]) -> Any:
        """Run an async handler to completion on the kit's own event loop."""

        async def wrap() -> Any:
            return await awaitable

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if self._runner is None:
                self._runner = asyncio.Runner()
            return self._runner.run(wrap())
        # Called from inside a running loop (an async test): use a loop of its own.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, wrap()).result()

    def close(self) -> None:
        """Close the event loop async handlers ran on (also done when collected)."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def __del__(self) -> None:
        self.close()


def _arguments(handler: Handler, call: Call) -> Sequence[Any]:
    try:
        params = [
            p
            for p in inspect.signature(handler).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) or p.kind is p.VAR_POSITIONAL
        ]
    except (TypeError, ValueError):
        return (call.payload,)
    if len(params) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params):
        return (call.payload, call)
    return (call.payload,)


class _SdkHandler:
    """A handler registered on an SDK :class:`Participant`, called like the SDK does."""

    def __init__(self, participant: str, registration: Any) -> None:
        self.participant = participant
        self.registration = registration

    async def __call__(self, call: Call) -> Any:
        try:
            command = self.registration.model.model_validate(call.payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "<payload>"
            return StepFailed(
                step=call.step,
                attempt=call.attempt,
                code=INVALID_COMMAND,
                message=f"{where}: {first['msg']}",
            )
        ctx = CommandContext(
            envelope=call.envelope,
            participant=self.participant,
            topic=f"{self.participant}.commands",
            partition=0,
            offset=0,
        )
        return await self.registration.handler(command, ctx)
