"""How the console shows things: words, graphs and the engine's dry run of a verb.

Audit records become plain sentences, a definition becomes a graph with a saga's
progress drawn on it (server-side SVG), and an operator verb is run through the pure
engine on the current state before it is sent.

The graph is drawn on the server, so it needs no JavaScript and no graph library: steps
are laid out in columns by their longest path from the start (``depends_on``), each
node coloured by what the saga did with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

from saga.definition import SagaDefinition, Step
from saga.engine import (
    CompensationStatus,
    SagaState,
    StepState,
    StepStatus,
    transition,
)
from saga.operations import AuditRecordView, Verb, operator_event

# -- progress -------------------------------------------------------------------------------

PROGRESS = ("done", "running", "waiting", "failed", "compensating", "compensated", "skipped")
"""The states a step is drawn in (plus ``pending``)."""


def progress(st: StepState | None) -> str:
    """What the saga did with a step, in one word (the graph's colour and legend)."""
    if st is None:
        return "pending"
    comp = st.compensation
    if comp is CompensationStatus.COMPENSATED:
        return "compensated"
    if comp in (CompensationStatus.RUNNING, CompensationStatus.RETRY_SCHEDULED):
        return "compensating"
    if comp is CompensationStatus.FAILED:
        return "failed"
    if comp is CompensationStatus.SKIPPED:
        return "skipped"
    return {
        StepStatus.SUCCEEDED: "done",
        StepStatus.RUNNING: "running",
        StepStatus.RETRY_SCHEDULED: "running",
        StepStatus.WAITING: "waiting",
        StepStatus.FAILED: "failed",
        StepStatus.TIMED_OUT: "failed",
        StepStatus.SKIPPED: "skipped",
        StepStatus.CANCELLED: "skipped",
    }.get(st.status, "pending")


# -- graph ----------------------------------------------------------------------------------

_W, _H, _GAP_X, _GAP_Y, _PAD = 170, 54, 48, 18, 16


def _columns(definition: SagaDefinition) -> list[list[Step]]:
    by_name = {s.name: s for s in definition.steps}
    depth: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in depth:
            deps = by_name[name].depends_on
            depth[name] = 1 + max((level(d) for d in deps), default=-1)
        return depth[name]

    cols: list[list[Step]] = []
    for step in definition.steps:
        d = level(step.name)
        while len(cols) <= d:
            cols.append([])
        cols[d].append(step)
    return cols


def graph_svg(definition: SagaDefinition, state: SagaState | None = None) -> str:
    """An SVG of ``definition``; with ``state``, every step coloured by its progress.

    Nodes carry ``data-step`` and ``data-progress`` attributes (and a ``<title>``), so
    the drawing can be read by tests and screen readers as well as by eye.
    """
    cols = _columns(definition)
    tallest = max((len(c) for c in cols), default=1)
    height = _PAD * 2 + tallest * _H + (tallest - 1) * _GAP_Y
    pos: dict[str, tuple[int, int]] = {}
    for i, col in enumerate(cols):
        x = _PAD + 40 + _GAP_X + i * (_W + _GAP_X)
        total = len(col) * _H + (len(col) - 1) * _GAP_Y
        top = (height - total) // 2
        for j, step in enumerate(col):
            pos[step.name] = (x, top + j * (_H + _GAP_Y))
    mid = height // 2
    end_x = _PAD + 40 + _GAP_X + len(cols) * (_W + _GAP_X)
    width = end_x + 40 + _PAD  # the start and end circles are 40 wide
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(definition.name)} v{definition.version}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'class="arrowhead"/></marker></defs>',
    ]
    depended = {d for s in definition.steps for d in s.depends_on}

    def edge(x1: int, y1: int, x2: int, y2: int) -> None:
        cx = (x1 + x2) // 2
        parts.append(
            f'<path class="edge" d="M{x1},{y1} C{cx},{y1} {cx},{y2} {x2},{y2}" '
            'marker-end="url(#arrow)"/>'
        )

    for step in definition.steps:
        x, y = pos[step.name]
        if not step.depends_on:
            edge(_PAD + 40, mid, x, y + _H // 2)
        for dep in step.depends_on:
            dx, dy = pos[dep]
            edge(dx + _W, dy + _H // 2, x, y + _H // 2)
        if step.name not in depended:
            edge(x + _W, y + _H // 2, end_x, mid)
    parts.append(f'<circle class="terminal" cx="{_PAD + 20}" cy="{mid}" r="20"/>')
    parts.append(f'<text class="terminal-label" x="{_PAD + 20}" y="{mid + 4}">start</text>')
    parts.append(f'<circle class="terminal" cx="{end_x + 20}" cy="{mid}" r="20"/>')
    parts.append(f'<text class="terminal-label" x="{end_x + 20}" y="{mid + 4}">end</text>')
    for step in definition.steps:
        x, y = pos[step.name]
        st = state.steps.get(step.name) if state is not None else None
        prog = progress(st) if state is not None else "plain"
        kind = str(step.kind)
        sub = f"wait for {step.signal}" if step.traits.waits_for_signal else f"{step.participant}"
        tags = [kind]
        if step.when:
            tags.append(f"if {step.when}")
        title = f"{step.name} ({', '.join(tags)}): {prog}"
        if st is not None and st.attempt > 1:
            title += f", {st.attempt} attempts"
        rx = 26 if step.traits.retries_forever else 4  # drawn like the Mermaid stadium
        parts.append(
            f'<g class="node {prog} kind-{kind}" data-step="{escape(step.name)}" '
            f'data-progress="{prog}"><title>{escape(title)}</title>'
            f'<rect x="{x}" y="{y}" width="{_W}" height="{_H}" rx="{rx}"/>'
            f'<text class="name" x="{x + _W // 2}" y="{y + 22}">{escape(step.name)}</text>'
            f'<text class="sub" x="{x + _W // 2}" y="{y + 40}">{escape(sub)} · '
            f"{escape(prog if state is not None else kind)}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


# -- timeline in words ------------------------------------------------------------------------


def _step(r: AuditRecordView) -> str:
    return f"“{r.step}”" if r.step else "the saga"


def _Step(r: AuditRecordView) -> str:  # the capitalised form of _step
    return f"Step “{r.step}”" if r.step else "The saga"


def _try(r: AuditRecordView) -> str:
    return f" (attempt {r.attempt})" if r.attempt and r.attempt > 1 else ""


def describe(r: AuditRecordView) -> str:
    """One audit record in plain words."""
    d = r.detail
    k = r.kind
    code = d.get("code")
    msg = d.get("message")
    error = f": {code}" + (f" — {msg}" if msg else "") if code else ""
    words: dict[str, str] = {
        "saga.started": "Saga started",
        "command.sent": f"Sent the command of {_step(r)}{_try(r)}",
        "command.deferred": (
            f"Held back the command of {_step(r)}{_try(r)}: "
            f"{d.get('participant', 'its participant')} is paused (circuit open)"
        ),
        "compensation.sent": f"Sent the compensation of {_step(r)}{_try(r)}",
        "compensation.deferred": (
            f"Held back the compensation of {_step(r)}: "
            f"{d.get('participant', 'its participant')} is paused (circuit open)"
        ),
        "step.succeeded": f"{_Step(r)} succeeded{_try(r)}",
        "step.failed": f"{_Step(r)} failed{_try(r)}{error}",
        "step.retry_scheduled": (f"{_Step(r)} failed{error}; retry in {d.get('delay_ms', '?')} ms"),
        "step.skipped": f"{_Step(r)} skipped: {d.get('reason', '')}",
        "step.cancelled": f"{_Step(r)} cancelled (the saga compensates)",
        "step.waiting": f"{_Step(r)} waits for the signal “{d.get('signal')}”",
        "signal.received": f"Signal “{d.get('signal')}” received",
        "signal.consumed": f"{_Step(r)} took the signal “{d.get('signal')}”",
        "signal.buffered": f"Signal “{d.get('signal')}” kept for later",
        "pivot.passed": f"Passed the pivot {_step(r)}: from here the saga only goes forward",
        "compensation.succeeded": f"Undid {_step(r)}{_try(r)}",
        "compensation.failed": f"Undoing {_step(r)} failed{_try(r)}{error}",
        "compensation.retry_scheduled": (
            f"Undoing {_step(r)} failed; retry in {d.get('delay_ms', '?')} ms"
        ),
        "compensation.skipped": f"Compensation of {_step(r)} skipped by an operator",
        "saga.marked_compensated": "Marked compensated by an operator",
        "event.ignored": f"Ignored a message: {d.get('reason', '')}",
        "event.dead_lettered": f"Dead-lettered a message: {d.get('reason', '')}",
        "operator.rejected": f"Refused an operator command: {d.get('reason', '')}",
    }
    if k in words:
        return words[k]
    if k == "status.changed":
        trigger = str(d.get("trigger", "")).replace("_", " ")
        return f"Status {d.get('from')} → {d.get('to')} ({trigger})"
    if k == "operator.requested":
        verb = str(d.get("verb", "")).replace("_", " ")
        if verb == "start":
            return "Start requested"
        target = f" on {_step(r)}" if r.step else ""
        return f"Operator asked to {verb}{target}"
    if k.startswith("event."):
        what = k.removeprefix("event.").replace("_", " ")
        return f"Received: {what}" + (f" for {_step(r)}" if r.step else "")
    return k


def reason_of(r: AuditRecordView) -> str:
    """The reason an operator gave, if the record has one."""
    d = r.detail
    reason = d.get("reason")
    if not reason and isinstance(d.get("event"), dict):
        reason = d["event"].get("reason")
    return str(reason) if reason and r.kind not in ("step.skipped",) else ""


def quiet(r: AuditRecordView) -> bool:
    """Records that repeat what the next one says (the raw event before its effect)."""
    return r.kind.startswith("event.") and r.kind not in ("event.ignored", "event.dead_lettered")


def pretty_json(value: Any) -> str:
    """Indented JSON for the collapsible blocks."""
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def ago(then: datetime | None, now: datetime) -> str:
    """``3 min ago``-style text."""
    if then is None:
        return ""
    s = int((now - then).total_seconds())
    if s < 0:
        return f"in {_span(-s)}"
    return f"{_span(s)} ago"


def _span(s: int) -> str:
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d"


# -- operator verbs and their dry run ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Action:
    """An operator verb the console offers for a saga."""

    slug: str
    """In the URL: ``retry-step``, ``retry-compensation``, ``mark-compensated`` ..."""
    verb: Verb
    step: str | None
    label: str
    danger: bool = False


ACTIONS: dict[str, tuple[Verb, bool, str]] = {
    "retry-step": (Verb.RETRY_STEP, True, "Retry step"),
    "skip-step": (Verb.SKIP_STEP, True, "Skip step"),
    "retry-compensation": (Verb.RETRY_STEP, True, "Retry compensation"),
    "skip-compensation": (Verb.SKIP_STEP, True, "Skip compensation"),
    "mark-compensated": (Verb.MARK_COMPENSATED, False, "Mark compensated"),
    "resume": (Verb.RESUME, False, "Resume"),
    "abort": (Verb.ABORT, False, "Abort"),
}
"""URL slug -> (verb, takes a step, label)."""


@dataclass(frozen=True, kw_only=True)
class DryRun:
    """What the engine would do with an operator verb on the saga as it is now."""

    outcome: str
    """``applied``, ``rejected``, ``ignored`` or ``dead_letter``."""
    reason: str | None
    status_before: str
    status_after: str | None
    sends: list[str]
    """Commands and compensations it would send (``step: message type``)."""
    steps: list[tuple[str, str, str]]
    """``(step, before, after)`` of each step whose progress changes."""
    audit: list[str]
    """What the timeline would record, in words."""

    @property
    def ok(self) -> bool:
        """Whether the engine would apply it."""
        return self.outcome == "applied"


def dry_run(
    state: SagaState,
    definition: SagaDefinition,
    verb: Verb,
    *,
    step: str | None,
    actor: str,
    reason: str,
    now: datetime,
) -> DryRun:
    """Run the pure engine on the current state without storing anything."""
    if step is not None and not definition.has_step(step):
        return DryRun(
            outcome="dead_letter",
            reason=f"{state.saga_type} v{state.saga_version} has no step {step!r}",
            status_before=str(state.status),
            status_after=None,
            sends=[],
            steps=[],
            audit=[],
        )
    decision = transition(
        state, operator_event(verb, step=step, reason=reason, actor=actor), definition, now
    )
    after = decision.state if decision.outcome == "applied" else None
    changed = []
    if after is not None:
        for name, st in after.steps.items():
            a, b = progress(state.steps.get(name)), progress(st)
            if a != b:
                changed.append((name, a, b))
    views = [
        AuditRecordView(
            seq=i,
            recorded_at=now,
            kind=e.kind,
            step=e.step,
            attempt=e.attempt,
            actor=e.actor,
            detail=dict(e.detail),
            hash="",
        )
        for i, e in enumerate(decision.audit, 1)
    ]
    return DryRun(
        outcome=decision.outcome,
        reason=decision.reason,
        status_before=str(state.status),
        status_after=str(after.status) if after is not None else None,
        sends=[
            f"{c.envelope.step}: {c.envelope.type} → {c.participant}" for c in decision.commands
        ],
        steps=changed,
        audit=[describe(v) for v in views if not quiet(v)],
    )


def offered_actions(state: SagaState, definition: SagaDefinition, now: datetime) -> list[Action]:
    """The operator verbs the engine would apply to this saga now (each dry-run first)."""
    candidates: list[Action] = []
    stuck = state.stuck_step
    if stuck and state.stuck_in == "compensation":
        candidates += [
            Action(slug="retry-compensation", verb=Verb.RETRY_STEP, step=stuck,
                   label=f"Retry compensation of {stuck}"),
            Action(slug="skip-compensation", verb=Verb.SKIP_STEP, step=stuck,
                   label=f"Skip compensation of {stuck}"),
        ]  # fmt: skip
    elif stuck:
        candidates += [
            Action(slug="retry-step", verb=Verb.RETRY_STEP, step=stuck,
                   label=f"Retry {stuck}"),
            Action(slug="skip-step", verb=Verb.SKIP_STEP, step=stuck, label=f"Skip {stuck}"),
        ]  # fmt: skip
    for name, st in state.steps.items():
        if st.status is StepStatus.WAITING and name != stuck:
            candidates.append(
                Action(slug="skip-step", verb=Verb.SKIP_STEP, step=name, label=f"Skip {name}")
            )
    candidates += [
        Action(slug="resume", verb=Verb.RESUME, step=None, label="Resume"),
        Action(slug="mark-compensated", verb=Verb.MARK_COMPENSATED, step=None,
               label="Mark compensated", danger=True),
        Action(slug="abort", verb=Verb.ABORT, step=None, label="Abort", danger=True),
    ]  # fmt: skip
    return [
        a
        for a in candidates
        if dry_run(
            state, definition, a.verb, step=a.step, actor="console", reason="preview", now=now
        ).ok
    ]


# -- charts -----------------------------------------------------------------------------------

SERIES = ("started", "completed", "compensated", "stuck")


def chart_svg(starts: list[datetime], values: dict[str, list[int]], peak: int) -> str:
    """Grouped bars of the overview's counts per time bucket (server-side SVG)."""
    n = len(starts)
    bar, group_gap, h, left, bottom = 6, 8, 160, 36, 22
    group = bar * len(SERIES) + group_gap
    width = left + n * group + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} '
        f'{h + bottom}" width="{width}" height="{h + bottom}" role="img" '
        'aria-label="sagas per time bucket">'
    ]
    for frac in (0.0, 0.5, 1.0):
        y = int(h - frac * (h - 10))
        parts.append(f'<line class="grid" x1="{left}" y1="{y}" x2="{width}" y2="{y}"/>')
        parts.append(f'<text class="axis" x="{left - 4}" y="{y + 4}">{round(peak * frac)}</text>')
    for i, start in enumerate(starts):
        x0 = left + i * group
        for j, name in enumerate(SERIES):
            v = values[name][i]
            bh = 0 if v == 0 else max(int((h - 10) * v / peak), 1)
            parts.append(
                f'<rect class="bar {name}" x="{x0 + j * bar}" y="{h - bh}" width="{bar - 1}" '
                f'height="{bh}"><title>{start:%Y-%m-%d %H:%M}: {v} {name}</title></rect>'
            )
        if i % max(n // 6, 1) == 0:
            parts.append(f'<text class="axis-x" x="{x0}" y="{h + 15}">{start:%m-%d %H:%M}</text>')
    parts.append("</svg>")
    return "".join(parts)
