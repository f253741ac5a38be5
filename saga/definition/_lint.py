"""Warnings about a valid definition: things that load but are probably mistakes.

``saga lint`` prints them. Today: a mapping (a step's ``input``, ``when`` or
``compensation_input``) that reads a context field which the input schema does not
declare and no step's ``output`` writes: with a schema, such a read finds nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jmespath

from saga.definition._input import declared_fields
from saga.definition._model import SagaDefinition

_ON_ELEMENTS = frozenset({"projection", "filter_projection", "pipe"})
"""Nodes whose right-hand side is evaluated on something else than the context."""


def root_fields(expression: str) -> set[str]:
    """The top-level context fields a JMESPath expression reads (``a`` in ``a.b[0]``)."""
    found: set[str] = set()
    _visit(jmespath.compile(expression).parsed, at_root=True, found=found)
    return found


def _visit(node: Any, *, at_root: bool, found: set[str]) -> None:
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    children = node.get("children", [])
    if kind == "field":
        if at_root:
            found.add(str(node["value"]))
        return
    if kind in ("subexpression", "index_expression") or kind in _ON_ELEMENTS:
        for i, child in enumerate(children):
            _visit(child, at_root=at_root and i == 0, found=found)
        return
    for child in children:
        _visit(child, at_root=at_root, found=found)


def _mappings(defn: SagaDefinition) -> Iterator[tuple[str, str]]:
    for i, step in enumerate(defn.steps):
        path = f"steps[{i}]"
        if step.when is not None:
            yield f"{path}.when", step.when
        for key, expr in step.input.items():
            yield f"{path}.input.{key}", expr
        for key, expr in (step.compensation_input or {}).items():
            yield f"{path}.compensation_input.{key}", expr


def lint_warnings(defn: SagaDefinition) -> list[str]:
    """Warnings for a valid definition (empty when nothing looks wrong)."""
    declared = declared_fields(defn.input_schema)
    if declared is None:
        return []
    written = {key for step in defn.steps for key in step.output}
    known = declared | written
    return [
        f"{path}: reads {name!r}, which the input schema does not declare and no"
        " step's output writes"
        for path, expr in _mappings(defn)
        for name in sorted(root_fields(expr) - known)
    ]
