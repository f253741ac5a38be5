"""Semantic validation of a definition; every error names the path of the offending field.

Checks, in order: duplicate names, the fields each step kind needs or forbids, the
JMESPath expressions, the dependency references and cycles, then the pivot rules: at most
one pivot, the pivot is a cut of the DAG (every other step is its ancestor or its
descendant), no compensatable step after it, retriable steps only after it, and a
retriable step retries (practically) forever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from saga.definition._expr import check_expression
from saga.definition._input import check_input_schema
from saga.definition._model import UNBOUNDED_RETRY_THRESHOLD, OnTimeout
from saga.errors import DefinitionError

if TYPE_CHECKING:
    from saga.definition._model import SagaDefinition, Step


def validate_definition(defn: SagaDefinition) -> None:
    """Raise :class:`DefinitionError` (with ``path``) at the first problem of ``defn``."""
    if not defn.steps:
        raise DefinitionError("a saga needs at least one step", path="steps")
    index = _check_names(defn)
    for i, step in enumerate(defn.steps):
        _check_kind_fields(step, f"steps[{i}]")
        _check_expressions(step, f"steps[{i}]")
        _check_references(step, f"steps[{i}]", index)
    _check_cycles(defn, index)
    _check_pivot(defn, index)
    if defn.input_schema is not None:
        check_input_schema(defn.input_schema)
    if defn.lock is not None:
        check_expression(defn.lock, "lock")
    elif defn.lock_timeout_ms is not None:
        raise DefinitionError("a lock timeout needs a 'lock'", path="lock_timeout_ms")
    for i, trigger in enumerate(defn.triggers):
        if trigger.when is not None:
            check_expression(trigger.when, f"triggers[{i}].when")
        for key, expr in trigger.input.items():
            check_expression(expr, f"triggers[{i}].input.{key}")


def _check_names(defn: SagaDefinition) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, step in enumerate(defn.steps):
        if step.name in index:
            raise DefinitionError(
                f"duplicate step name {step.name!r} (also steps[{index[step.name]}])",
                path=f"steps[{i}].name",
            )
        index[step.name] = i
    for i, step in enumerate(defn.steps):
        if step.group is not None and step.group in index:
            raise DefinitionError(
                f"group name {step.group!r} is also a step name", path=f"steps[{i}].group"
            )
    return index


def _check_kind_fields(step: Step, path: str) -> None:
    def need(field: str, value: object) -> None:
        if value is None:
            raise DefinitionError(f"a {step.kind} step needs {field!r}", path=f"{path}.{field}")

    def forbid(field: str, value: object, why: str) -> None:
        if value:
            raise DefinitionError(f"a {step.kind} step {why}", path=f"{path}.{field}")

    traits = step.traits
    if traits.waits_for_signal:
        need("signal", step.signal)
        need("timeout_ms", step.timeout_ms)
        for field in ("participant", "command", "compensation"):
            forbid(field, getattr(step, field), f"sends nothing, so it has no {field}")
        forbid("input", step.input, "sends nothing, so it has no input mapping")
        return
    need("participant", step.participant)
    need("command", step.command)
    forbid("signal", step.signal, "does not wait for a signal")
    forbid(
        "on_timeout",
        step.on_timeout is not OnTimeout.FAIL,
        "cannot continue on timeout (only wait steps can)",
    )
    if traits.compensatable:
        need("compensation", step.compensation)
    else:
        forbid("compensation", step.compensation, "cannot be compensated")
        forbid("compensation_input", step.compensation_input, "cannot be compensated")
    if traits.retries_forever:
        attempts = step.retry.max_attempts
        if attempts is not None and attempts < UNBOUNDED_RETRY_THRESHOLD:
            raise DefinitionError(
                "a retriable step must retry until it succeeds: max_attempts must be "
                f"null (unbounded) or >= {UNBOUNDED_RETRY_THRESHOLD}, not {attempts}",
                path=f"{path}.retry.max_attempts",
            )


def _check_expressions(step: Step, path: str) -> None:
    if step.when is not None:
        check_expression(step.when, f"{path}.when")
    for key, expr in step.input.items():
        check_expression(expr, f"{path}.input.{key}")
    for key, expr in step.output.items():
        check_expression(expr, f"{path}.output.{key}")
    for key, expr in (step.compensation_input or {}).items():
        check_expression(expr, f"{path}.compensation_input.{key}")
    if step.traits.compensatable and step.compensation_input is None and "output" in step.input:
        raise DefinitionError(
            "'output' is reserved in compensation payloads (it carries the step's output)",
            path=f"{path}.input.output",
        )


def _check_references(step: Step, path: str, index: dict[str, int]) -> None:
    seen: set[str] = set()
    for j, dep in enumerate(step.depends_on):
        where = f"{path}.depends_on[{j}]"
        if dep not in index:
            raise DefinitionError(f"unknown step {dep!r}", path=where)
        if dep == step.name:
            raise DefinitionError(f"cycle: step {dep!r} depends on itself", path=where)
        if dep in seen:
            raise DefinitionError(f"step {dep!r} is listed twice", path=where)
        seen.add(dep)


def _check_cycles(defn: SagaDefinition, index: dict[str, int]) -> None:
    # Depth-first search with colours; report the first cycle found, as a path of names.
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(index, white)
    stack: list[str] = []

    def visit(name: str) -> None:
        colour[name] = grey
        stack.append(name)
        for dep in defn.steps[index[name]].depends_on:
            if colour[dep] == grey:
                cycle = [*stack[stack.index(dep) :], dep]
                raise DefinitionError(
                    "cycle: " + " -> ".join(reversed(cycle)),
                    path=f"steps[{index[name]}].depends_on",
                )
            if colour[dep] == white:
                visit(dep)
        stack.pop()
        colour[name] = black

    for name in index:
        if colour[name] == white:
            visit(name)


def ancestors(defn: SagaDefinition, name: str) -> set[str]:
    """Return every step ``name`` transitively depends on (``defn`` must be acyclic)."""
    by_name = {s.name: s for s in defn.steps}
    seen: set[str] = set()
    todo = list(by_name[name].depends_on)
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(by_name[dep].depends_on)
    return seen


def descendants(defn: SagaDefinition, name: str) -> set[str]:
    """Return every step that transitively depends on ``name``."""
    return {s.name for s in defn.steps if name in ancestors(defn, s.name)}


def _check_pivot(defn: SagaDefinition, index: dict[str, int]) -> None:
    pivots = [i for i, s in enumerate(defn.steps) if s.traits.pivot]
    if len(pivots) > 1:
        first = defn.steps[pivots[0]].name
        raise DefinitionError(
            f"a saga has at most one pivot (the first is {first!r})",
            path=f"steps[{pivots[1]}].kind",
        )
    if not pivots:
        for i, step in enumerate(defn.steps):
            if step.traits.placement == "after_pivot":
                raise DefinitionError(
                    f"a {step.kind} step must come after a pivot, and this saga has none",
                    path=f"steps[{i}].kind",
                )
        return
    pivot = defn.steps[pivots[0]].name
    before = ancestors(defn, pivot)
    after = descendants(defn, pivot)
    for i, step in enumerate(defn.steps):
        path = f"steps[{i}]"
        if step.name == pivot:
            continue
        if step.name not in before and step.name not in after:
            raise DefinitionError(
                f"step {step.name!r} must run before or after the pivot {pivot!r} "
                "(the pivot must be a cut of the step graph)",
                path=f"{path}.depends_on",
            )
        placement = step.traits.placement
        if step.name in after and placement == "before_pivot":
            raise DefinitionError(
                f"{step.kind} step {step.name!r} comes after the pivot {pivot!r}",
                path=f"{path}.kind",
            )
        if step.name in before and placement == "after_pivot":
            raise DefinitionError(
                f"{step.kind} step {step.name!r} comes before the pivot {pivot!r}",
                path=f"{path}.kind",
            )
