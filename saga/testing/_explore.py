"""Explore a definition's whole failure space within a bound.

Theory of operation: the engine is pure, so a saga's future depends only on its state
and the next event. From each state the explorer lists every event that could come
next: for each command or compensation in flight a success, a retriable and a permanent
failure, its timeout (or, for a step without a timeout, a lost reply); each due back-off
timer; for a waiting step its signal and its signal timeout; the saga deadline; a late
reply to an attempt that timed out; the same reply delivered twice. It applies each with
:func:`saga.engine.transition` and walks the resulting graph breadth first, so the first
path found to any state is a shortest one. States are memoised by a hash of their JSON
dump (without times, revisions and message ids, which do not change what can happen
next), plus the explorer's own bookkeeping (lost and late replies, the deadline), so
interleavings that meet again are explored once.

With ``operators=N``, an operator acts too, up to N times per path: on a stuck saga
with every verb of ``saga`` (resume, retry the step, skip it, mark the saga
compensated, abort), on a running one with an abort, on a waiting wait step with a
skip. A stuck state is then an outcome that paths go on from. (A retry gives the step
a fresh budget, so without the bound the space has no end.)

Conditions: a step's ``when`` is tried both ways by default (``conditions="both"``): each
distinct condition expression is a free choice, made once at the start, so the explorer
walks one copy of the space per combination (the first event of each path says which:
``the saga starts (express: true)``). Steps with the same expression share the
choice; different expressions are independent, even when no input could make them
disagree (``express`` and ``!express``), so an outcome may be one that no
real input reaches, but every property still holds for it or is a real engine bug. With
``conditions="input"`` the conditions are evaluated over the given input and the
explorer's synthetic step outputs, and only the branches those take are walked.

Bounds: a failure or timeout is offered only up to attempt ``max_attempts`` of a step's
current retry budget (later attempts only succeed), and no path is longer than
``depth`` events. Finished (completed, compensated, aborted) and stuck states end a path
(stuck ones only once the operator actions are used up).

Properties checked on every step: no compensation is sent for a step whose command is
still in flight (or never went out); nothing past the pivot is compensated; every state
that is not finished can still make progress; a compensated saga compensated every step
that took effect, in exact reverse completion order (unless an operator marked it
compensated: then they undid the rest by hand; an operator who aborts a saga stuck on
a pivot of unknown outcome says it did not take effect); late and duplicate replies change
nothing; the engine never raises.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from contracts import MessageKind
from saga.definition import SagaDefinition, Step
from saga.engine import (
    TERMINAL,
    CompensationStatus,
    Decision,
    Event,
    OperatorAbort,
    OperatorMarkCompensated,
    OperatorResume,
    OperatorRetryStep,
    OperatorSkipStep,
    SagaState,
    SagaStatus,
    SignalReceived,
    StartSaga,
    StepFailed,
    StepStatus,
    StepSucceeded,
    TimerFired,
    TimerKind,
    transition,
)
from saga.testing._kit import SAGA_ID, T0, Transition, compensation_order

RETRIABLE_CODE: Final = "explore.unavailable"
"""Code of the retriable failures the explorer sends (unless a policy lists its own)."""

PERMANENT_CODE: Final = "explore.rejected"
"""Code of the permanent failures the explorer sends."""

PROPERTIES: Final = {
    "compensation_before_done": "a compensation was sent before the step it undoes finished",
    "pivot_compensated": "a step at or after the pivot was compensated",
    "no_progress": "the saga can make no progress (nothing in flight, no timer) yet is not final",
    "left_uncompensated": "a compensated saga left a step that took effect uncompensated",
    "compensation_order": "compensations did not run in exact reverse completion order",
    "late_reply_applied": "a late reply to a timed-out attempt changed the saga",
    "duplicate_applied": "a duplicate reply changed the saga",
    "engine_error": "the engine raised",
}
"""Every property the explorer checks, by name."""

Conditions = Literal["both", "input"]
"""How the explorer treats a step's ``when``: try both ways, or evaluate it."""

MAX_CONDITIONS: Final = 12
"""Most distinct conditions tried both ways (2**12 copies of the space)."""

_LITERAL: Final = {True: "`true`", False: "`false`"}

_VOLATILE_STEP = {
    "started_at",
    "finished_at",
    "message_id",
    "compensation_message_id",
    "last_error",
}
_VOLATILE = {
    "revision",
    "updated_at",
    "created_at",
    "deadline_at",
    "last_error",
    "failure",
    "abort_reason",
}


@dataclass(frozen=True)
class Outcome:
    """One reachable end of the saga, with the shortest path that leads to it."""

    status: str
    """``completed``, ``compensated``, ``aborted`` or ``stuck``."""
    stuck_step: str | None
    """For ``stuck``: the step it is stuck on."""
    stuck_in: str | None
    """For ``stuck``: ``forward`` or ``compensation``."""
    end_states: int
    """How many distinct end states have this outcome."""
    path: tuple[str, ...]
    """A shortest event sequence from the start to this outcome."""

    @property
    def label(self) -> str:
        """E.g. ``completed`` or ``stuck on confirm_order (forward)``."""
        if self.status == SagaStatus.STUCK:
            return f"stuck on {self.stuck_step} ({self.stuck_in})"
        return self.status


@dataclass(frozen=True)
class Violation:
    """A broken property, with the shortest path that breaks it."""

    property: str
    """The property's name (a key of :data:`PROPERTIES`)."""
    message: str
    """What broke, in the saga's terms."""
    path: tuple[str, ...]
    """A shortest event sequence that breaks it."""
    occurrences: int
    """How many times it was found (transitions or states)."""


@dataclass(frozen=True)
class Exploration:
    """What :func:`explore` found."""

    definition: str
    """``name v<version>`` of the definition explored."""
    max_attempts: int
    """The attempt bound."""
    depth: int
    """The depth bound."""
    states: int
    """Distinct states visited."""
    transitions: int
    """Events applied."""
    outcomes: tuple[Outcome, ...]
    """Every reachable end, shortest path first."""
    violations: tuple[Violation, ...]
    """Every broken property."""
    cut_at_depth: int
    """Paths cut at the depth bound while not finished."""
    cut_at_attempts: int
    """Failures not offered because the attempt bound was reached."""
    complete: bool
    """Whether the space within the bounds was walked to the end (``max_states`` not hit)."""
    seconds: float
    """How long it took."""
    operators: int = 0
    """The bound on operator actions per path (0: no operator acts)."""
    conditions: tuple[str, ...] = ()
    """The condition expressions tried both ways (empty: none, or evaluated over the
    input with ``conditions="input"``)."""

    @property
    def ok(self) -> bool:
        """Whether no property broke."""
        return not self.violations

    def outcome(self, label: str) -> Outcome | None:
        """The outcome with this label (``completed``, ``stuck on p (forward)``, ...)."""
        return next((o for o in self.outcomes if o.label == label), None)

    def violation(self, prop: str) -> Violation | None:
        """The violation of property ``prop``, if it broke."""
        return next((v for v in self.violations if v.property == prop), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "definition": self.definition,
            "bounds": {
                "max_attempts": self.max_attempts,
                "depth": self.depth,
                "operators": self.operators,
            },
            "conditions_tried_both_ways": list(self.conditions),
            "states": self.states,
            "transitions": self.transitions,
            "complete": self.complete,
            "cut_at_depth": self.cut_at_depth,
            "cut_at_attempts": self.cut_at_attempts,
            "seconds": round(self.seconds, 3),
            "outcomes": [
                {
                    "outcome": o.label,
                    "status": o.status,
                    "stuck_step": o.stuck_step,
                    "stuck_in": o.stuck_in,
                    "end_states": o.end_states,
                    "shortest_path": list(o.path),
                }
                for o in self.outcomes
            ],
            "violations": [
                {
                    "property": v.property,
                    "message": v.message,
                    "occurrences": v.occurrences,
                    "shortest_path": list(v.path),
                }
                for v in self.violations
            ],
            "ok": self.ok,
        }

    def format(self) -> str:
        """A report for people."""
        lines = [
            f"{self.definition}: {self.states} states, {self.transitions} events "
            f"(at most {self.max_attempts} failing attempts per step, depth {self.depth}"
            + (
                f", at most {self.operators} operator action{'s' * (self.operators != 1)}"
                if self.operators
                else ""
            )
            + f"{'' if self.complete else ', state limit reached: partial'})",
        ]
        if self.conditions:
            lines.append(f"conditions tried both ways: {'; '.join(self.conditions)}")
        lines += ["", "outcomes:"]
        for o in self.outcomes:
            lines.append(
                f"  {o.label}  ({o.end_states} end state{'s' * (o.end_states != 1)}), "
                f"shortest path, {len(o.path)} events:"
            )
            lines.extend(f"    {i}. {label}" for i, label in enumerate(o.path, 1))
        if self.violations:
            lines += ["", "broken properties:"]
            for v in self.violations:
                lines.append(f"  {v.property}: {v.message}  ({v.occurrences}x), shortest path:")
                lines.extend(f"    {i}. {label}" for i, label in enumerate(v.path, 1))
        else:
            lines += ["", "no broken property"]
        if self.cut_at_depth or self.cut_at_attempts:
            lines += [
                "",
                f"bounds: {self.cut_at_depth} paths cut at depth {self.depth}, "
                f"{self.cut_at_attempts} failures beyond attempt {self.max_attempts} not tried",
            ]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Extra:
    """The explorer's bookkeeping next to the saga state."""

    lost: frozenset[tuple[str, bool, int]] = frozenset()
    """Attempts whose reply will never come (steps without a timeout)."""
    deadline: bool = False
    """The deadline timer is still set."""
    stray: StepSucceeded | StepFailed | None = None
    """A reply that may arrive next: a copy of the reply just delivered, or the late
    reply of the attempt that just timed out. Only as the next event (a stray reply
    that comes later meets the same check: an attempt no longer awaited)."""
    stray_kind: str = ""
    """``duplicate`` or ``late``."""
    marked: bool = False
    """An operator marked the saga compensated (the rest was undone by hand)."""
    vouched: bool = False
    """An operator aborted a stuck saga: compensating it says the step it is stuck on
    (a pivot whose outcome is unknown, say) did not take effect."""
    acts: int = 0
    """Operator actions so far on this path."""


@dataclass(frozen=True)
class _Move:
    label: str
    event: Event | None
    """``None``: nothing reaches the engine (a reply is lost)."""
    extra: _Extra
    kind: str = "event"
    """``event``, ``lost``, ``late`` or ``duplicate``."""


@dataclass
class _Node:
    parent: bytes | None
    label: str
    depth: int


@dataclass
class _Found:
    first: tuple[str, ...]
    message: str
    count: int = 0


@dataclass
class _Search:
    definition: SagaDefinition
    max_attempts: int
    duplicates: bool
    late_replies: bool
    engine: Transition
    operators: int = 0
    nodes: dict[bytes, _Node] = field(default_factory=dict)
    outcomes: dict[tuple[str, str | None, str | None], _Found] = field(default_factory=dict)
    violations: dict[tuple[str, str], _Found] = field(default_factory=dict)
    cut_at_attempts: int = 0

    def path(self, key: bytes | None, *extra: str) -> tuple[str, ...]:
        labels: list[str] = []
        while key is not None:
            node = self.nodes[key]
            labels.append(node.label)
            key = node.parent
        return (*reversed(labels), *extra)

    def violate(self, prop: str, message: str, parent: bytes | None, *last: str) -> None:
        found = self.violations.get((prop, message))
        if found is None:
            found = self.violations[(prop, message)] = _Found(self.path(parent, *last), message)
        found.count += 1


_EXCLUDE: Final[Any] = {
    **dict.fromkeys(_VOLATILE, True),
    "steps": {"__all__": _VOLATILE_STEP},
}


def _digest(state: SagaState) -> bytes:
    """A hash of the state's JSON dump, without what does not change what can happen."""
    blob = state.model_dump_json(exclude=_EXCLUDE)
    return hashlib.blake2b(blob.encode(), digest_size=16).digest()


def _key(digest: bytes, extra: _Extra) -> bytes:
    if extra == _Extra(deadline=extra.deadline):
        return digest + bytes([extra.deadline])
    stray = extra.stray.model_dump_json() if extra.stray is not None else ""
    flags = (extra.marked, extra.vouched, extra.acts)
    blob = repr((digest, sorted(extra.lost), extra.deadline, stray, flags))
    return hashlib.blake2b(blob.encode(), digest_size=17).digest()


def _synthetic_output(spec: Step) -> dict[str, Any]:
    """An output that satisfies the step's output mapping where it is a plain path."""
    out: dict[str, Any] = {}
    for expr in spec.output.values():
        parts = expr.split(".")
        if not all(p.isidentifier() for p in parts):
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = f"{spec.name}.{expr}"
    return out


def _retriable_code(spec: Step, compensation: bool) -> str:
    codes = (spec.compensation_retry if compensation else spec.retry).retriable_codes
    return codes[0] if codes else RETRIABLE_CODE


def _moves(search: _Search, state: SagaState, extra: _Extra) -> list[_Move]:
    """Every event that could come next, in a fixed order.

    Per reply awaited: success, timeout, permanent failure, retriable failure (so the
    shortest paths read as simply as possible), then timers, the deadline, strays.
    """
    d = search.definition
    moves: list[_Move] = []
    base = replace(extra, stray=None, stray_kind="")  # a stray reply comes next or never

    def replies(spec: Step, attempt: int, budget_attempt: int, comp: bool) -> None:
        who = f"{spec.name}{' (compensation)' if comp else ''}"
        at = f"(attempt {attempt})"
        kw: dict[str, Any] = {"step": spec.name, "attempt": attempt, "compensation": comp}
        output = {} if comp else _synthetic_output(spec)
        moves.append(_Move(f"{who}: succeeds {at}", StepSucceeded(output=output, **kw), base))
        if budget_attempt > search.max_attempts:
            search.cut_at_attempts += 1
            return
        if spec.timeout_ms is not None:
            kind = TimerKind.COMPENSATION_TIMEOUT if comp else TimerKind.STEP_TIMEOUT
            late = StepSucceeded(output=output, **kw) if search.late_replies else None
            moves.append(
                _Move(
                    f"{who}: times out {at}",
                    TimerFired(timer=kind, step=spec.name, attempt=attempt),
                    replace(base, stray=late, stray_kind="late"),
                )
            )
        code = _retriable_code(spec, comp)
        moves.append(
            _Move(
                f"{who}: fails for good {at}",
                StepFailed(code=PERMANENT_CODE, retriable=False, **kw),
                base,
            )
        )
        moves.append(
            _Move(
                f"{who}: fails, retriable {at}",
                StepFailed(code=code, retriable=True, **kw),
                base,
            )
        )
        if spec.timeout_ms is None:
            lost = base.lost | {(spec.name, comp, attempt)}
            moves.append(
                _Move(
                    f"{who}: reply lost {at}; the step has no timeout",
                    None,  # nothing reaches the engine: the reply never comes
                    replace(base, lost=lost),
                    "lost",
                )
            )

    for spec in d.steps:
        st = state.steps[spec.name]
        if spec.traits.waits_for_signal:
            if st.status is StepStatus.WAITING:
                signal = spec.signal or ""
                moves.append(
                    _Move(
                        f"{spec.name}: signal {signal!r} arrives",
                        SignalReceived(name=signal, data={}),
                        base,
                    )
                )
                moves.append(
                    _Move(
                        f"{spec.name}: signal times out",
                        TimerFired(
                            timer=TimerKind.SIGNAL_TIMEOUT, step=spec.name, attempt=st.attempt
                        ),
                        base,
                    )
                )
            continue
        if (
            st.status is StepStatus.RUNNING
            and not st.deferred
            and (spec.name, False, st.attempt) not in extra.lost
        ):
            replies(spec, st.attempt, st.attempt - st.retry_base, False)
        if st.status is StepStatus.RETRY_SCHEDULED:
            moves.append(
                _Move(
                    f"{spec.name}: retry due (attempt {st.attempt + 1})",
                    TimerFired(timer=TimerKind.RETRY_DUE, step=spec.name, attempt=st.attempt + 1),
                    base,
                )
            )
        comp_attempt = st.compensation_attempt
        if (
            st.compensation is CompensationStatus.RUNNING
            and not st.compensation_deferred
            and (spec.name, True, comp_attempt) not in extra.lost
        ):
            replies(spec, comp_attempt, comp_attempt - st.compensation_retry_base, True)
        if st.compensation is CompensationStatus.RETRY_SCHEDULED:
            moves.append(
                _Move(
                    f"{spec.name} (compensation): retry due (attempt {comp_attempt + 1})",
                    TimerFired(
                        timer=TimerKind.COMPENSATION_RETRY_DUE,
                        step=spec.name,
                        attempt=comp_attempt + 1,
                    ),
                    base,
                )
            )
    pivot = d.pivot
    pivot_sent = pivot is not None and state.steps[pivot.name].sent
    if extra.deadline and state.status is SagaStatus.RUNNING and not pivot_sent:
        moves.append(
            _Move(
                "the saga deadline passes",
                TimerFired(timer=TimerKind.DEADLINE),
                replace(base, deadline=False),
            )
        )
    if extra.stray is not None:
        stray = extra.stray
        who = f"{stray.step}{' (compensation)' if stray.compensation else ''}"
        label = (
            f"{who}: late success reply to attempt {stray.attempt}"
            if extra.stray_kind == "late"
            else f"{who}: the same reply again (attempt {stray.attempt})"
        )
        moves.append(_Move(label, stray, base, extra.stray_kind))
    if extra.acts < search.operators:
        moves += _operator_moves(state, replace(base, acts=extra.acts + 1))
    return moves


def _operator_moves(state: SagaState, acted: _Extra) -> list[_Move]:
    """What an operator can do now.

    Offered after the other events: of two paths of the same length, the one without
    an operator is shown.
    """
    moves: list[_Move] = []
    if state.status is SagaStatus.STUCK and state.stuck_step is not None:
        step = state.stuck_step
        moves += [
            _Move("an operator resumes the saga", OperatorResume(), acted),
            _Move(f"an operator retries {step}", OperatorRetryStep(step=step), acted),
            _Move(f"an operator skips {step}", OperatorSkipStep(step=step), acted),
            _Move(
                "an operator marks the saga compensated",
                OperatorMarkCompensated(),
                replace(acted, marked=True),
            ),
        ]
    if state.status in (SagaStatus.STUCK, SagaStatus.RUNNING):
        vouched = replace(acted, vouched=state.status is SagaStatus.STUCK)
        moves.append(_Move("an operator aborts the saga", OperatorAbort(), vouched))
    if state.status is SagaStatus.RUNNING:
        for name, st in state.steps.items():
            if st.status is StepStatus.WAITING:
                skip = OperatorSkipStep(step=name)
                moves.append(_Move(f"an operator skips {name}", skip, acted))
    return moves


def _is_final(state: SagaState) -> bool:
    return state.status in TERMINAL or state.status is SagaStatus.STUCK


def _check_decision(
    search: _Search, parent: bytes, move: _Move, before: SagaState, decision: Decision
) -> None:
    after = decision.state
    assert after is not None
    d = search.definition
    if move.kind == "late" and decision.outcome == "applied":
        search.violate(
            "late_reply_applied",
            f"{move.label}: it was applied",
            parent,
            move.label,
        )
    if move.kind == "duplicate" and decision.outcome == "applied":
        search.violate("duplicate_applied", f"{move.label}: it was applied", parent, move.label)
    for cmd in decision.commands:
        if cmd.envelope.kind != MessageKind.COMPENSATION:
            continue
        name = cmd.envelope.step or ""
        spec, st = d.step(name), after.steps[name]
        if st.status in (StepStatus.RUNNING, StepStatus.PENDING) or not st.sent:
            search.violate(
                "compensation_before_done",
                f"{name} was compensated while its command was {st.status}",
                parent,
                move.label,
            )
        if not spec.traits.compensatable or before.pivot_passed:
            search.violate(
                "pivot_compensated",
                f"{name} ({spec.kind}) was compensated"
                + (" after the pivot passed" if before.pivot_passed else ""),
                parent,
                move.label,
            )


def _check_final(search: _Search, key: bytes, state: SagaState, extra: _Extra) -> None:
    if state.status is not SagaStatus.COMPENSATED or extra.marked:
        return  # marked compensated: the operator undid the rest by hand
    d = search.definition
    pivot = d.pivot
    unknown = state.steps[pivot.name].uncertain and not extra.vouched if pivot else False
    if pivot is not None and (state.pivot_passed or unknown):
        search.violate(
            "pivot_compensated",
            f"the saga ended compensated after the pivot {pivot.name} "
            + ("passed" if state.pivot_passed else "may have taken effect (it timed out)"),
            key,
        )
    effective = [
        name
        for name in state.completion_order
        if state.steps[name].sent
        and (state.steps[name].status is StepStatus.SUCCEEDED or state.steps[name].uncertain)
    ]
    expected = compensation_order(d, state, effective)
    for name in reversed(expected):
        st = state.steps[name]
        if st.compensation not in (
            CompensationStatus.COMPENSATED,
            CompensationStatus.SKIPPED,
        ):
            search.violate(
                "left_uncompensated",
                f"{name} took effect and was not compensated ({st.compensation})",
                key,
            )
    if [n for n in state.compensation_order if n in expected] != expected:
        search.violate(
            "compensation_order",
            f"compensated {list(state.compensation_order)}, expected {expected}",
            key,
        )


def _condition_variants(
    definition: SagaDefinition, conditions: Conditions = "both"
) -> tuple[tuple[str, ...], list[tuple[SagaDefinition, str]]]:
    """The copies of ``definition`` to explore, each with the label of its choice.

    Returns the expressions tried both ways and, per combination of their values, the
    definition whose conditions are those constants (a JMESPath literal) and a label
    such as ``express: true; gift: false``. With ``conditions="input"``, or
    no condition, the definition itself with an empty label.
    """
    exprs = tuple(dict.fromkeys(s.when for s in definition.steps if s.when is not None))
    if conditions == "input" or not exprs:
        return (), [(definition, "")]
    if len(exprs) > MAX_CONDITIONS:
        raise ValueError(
            f"{definition.name} has {len(exprs)} distinct step conditions; at most"
            f" {MAX_CONDITIONS} are tried both ways: explore it with conditions='input'"
            " (saga explore --conditions input) and an input for each case"
        )
    variants = []
    for values in itertools.product((True, False), repeat=len(exprs)):
        chosen = dict(zip(exprs, values, strict=True))
        steps = tuple(
            s if s.when is None else s.model_copy(update={"when": _LITERAL[chosen[s.when]]})
            for s in definition.steps
        )
        label = "; ".join(f"{e}: {'true' if v else 'false'}" for e, v in chosen.items())
        variants.append((definition.model_copy(update={"steps": steps}), label))
    return exprs, variants


def explore(
    definition: SagaDefinition,
    *,
    input: Mapping[str, Any] | None = None,
    max_attempts: int = 3,
    depth: int = 60,
    duplicates: bool = True,
    late_replies: bool = True,
    max_states: int = 500_000,
    progress: Callable[[int, int, int], None] | None = None,
    engine: Transition = transition,
    operators: int = 0,
    conditions: Conditions = "both",
) -> Exploration:
    """Walk every interleaving of replies, failures and timers of ``definition``.

    Args:
        definition: The definition to explore.
        input: The start input (mappings are evaluated over it; conditions too with
            ``conditions="input"``).
        max_attempts: Offer failures and timeouts only up to this attempt of a step's
            retry budget; later attempts only succeed.
        depth: The longest path explored, in events.
        duplicates: Also deliver each reply a second time.
        late_replies: Also deliver the reply of a timed-out attempt, later.
        max_states: Stop after this many distinct states (the report says partial).
        progress: Called as ``progress(states, queued, depth)`` every 5,000 states.
        engine: The transition function (the engine's, unless testing a variant).
        operators: Let an operator act as well, up to this many times per path (see
            the module's docstring).
        conditions: ``both`` (the default) tries every step condition both ways;
            ``input`` evaluates them over ``input`` (see the module's docstring).

    Returns:
        The outcomes with their shortest paths, and the broken properties.
    """
    if max_attempts < 1 or depth < 1:
        raise ValueError("max_attempts and depth must be at least 1")
    if operators < 0:
        raise ValueError("operators must be at least 0")
    if conditions not in ("both", "input"):
        raise ValueError(f"conditions must be 'both' or 'input', not {conditions!r}")
    started = time.monotonic()
    tried, variants = _condition_variants(definition, conditions)
    search = _Search(definition, max_attempts, duplicates, late_replies, engine, operators)
    queue: deque[tuple[bytes, SagaState, bytes, _Extra, SagaDefinition]] = deque()
    for variant, choice in variants:
        start = engine(None, StartSaga(saga_id=SAGA_ID, input=dict(input or {})), variant, T0)
        assert start.state is not None
        extra = _Extra(deadline=definition.deadline_ms is not None)
        digest = _digest(start.state)  # differs per variant: it holds the definition hash
        root = _key(digest, extra)
        search.nodes[root] = _Node(
            None, f"the saga starts ({choice})" if choice else "the saga starts", 0
        )
        queue.append((root, start.state, digest, extra, variant))
    transitions = 0
    cut_at_depth = 0
    complete = True
    reported = 0
    while queue:
        key, state, digest, extra, variant = queue.popleft()
        node = search.nodes[key]
        if _is_final(state):
            stuck = state.status is SagaStatus.STUCK
            label = (
                state.status.value,
                state.stuck_step if stuck else None,
                state.stuck_in if stuck else None,
            )
            found = search.outcomes.get(label)
            if found is None:
                found = search.outcomes[label] = _Found(search.path(key), "")
            found.count += 1
            _check_final(search, key, state, extra)
            if not (stuck and extra.acts < operators):
                continue
        moves = _moves(search, state, extra)
        if not any(m.kind in ("event", "lost") for m in moves):
            search.violate(
                "no_progress",
                f"the saga is {state.status} with nothing in flight and no timer",
                key,
            )
            continue
        if node.depth >= depth:
            cut_at_depth += 1
            continue
        for move in moves:
            next_extra = move.extra
            after, after_digest = state, digest
            if move.event is not None:
                transitions += 1
                try:
                    decision = engine(state, move.event, variant, T0)
                except Exception as exc:  # an engine bug: report it with its path
                    search.violate("engine_error", f"{type(exc).__name__}: {exc}", key, move.label)
                    continue
                _check_decision(search, key, move, state, decision)
                if decision.outcome == "applied" and decision.state is not None:
                    after = decision.state
                    after_digest = _digest(after)
                    if (
                        duplicates
                        and move.kind == "event"
                        and isinstance(move.event, StepSucceeded | StepFailed)
                    ):
                        next_extra = replace(next_extra, stray=move.event, stray_kind="duplicate")
            child = _key(after_digest, next_extra)
            if child in search.nodes:
                continue
            search.nodes[child] = _Node(key, move.label, node.depth + 1)
            queue.append((child, after, after_digest, next_extra, variant))
        if progress is not None and len(search.nodes) - reported >= 5000:
            reported = len(search.nodes)
            progress(reported, len(queue), node.depth)
        if len(search.nodes) >= max_states:
            complete = False
            break
    outcomes = sorted(
        (
            Outcome(status, step, where, found.count, found.first)
            for (status, step, where), found in search.outcomes.items()
        ),
        key=lambda o: (len(o.path), o.label),
    )
    violations = sorted(
        (
            Violation(prop, f.message, f.first, f.count)
            for (prop, _), f in search.violations.items()
        ),
        key=lambda v: (list(PROPERTIES).index(v.property), len(v.path)),
    )
    return Exploration(
        definition=f"{definition.name} v{definition.version}",
        max_attempts=max_attempts,
        depth=depth,
        states=len(search.nodes),
        transitions=transitions,
        outcomes=tuple(outcomes),
        violations=tuple(violations),
        cut_at_depth=cut_at_depth,
        cut_at_attempts=search.cut_at_attempts,
        complete=complete,
        seconds=time.monotonic() - started,
        operators=operators,
        conditions=tried,
    )
