"""JMESPath expressions: the only logic a definition may contain.

Conditions and mappings are JMESPath over the saga context (or over a reply's output),
never Python callables, so definitions stay pure data. Expressions are compiled once and
cached. Evaluation errors become :class:`saga.errors.DefinitionError` naming the field, so
the engine can turn them into a step failure instead of crashing.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jmespath
from jmespath import exceptions as jmespath_errors
from jmespath.parser import ParsedResult

from saga.errors import DefinitionError

# Errors that reveal a broken expression even when it is evaluated against an empty
# document (an unknown function or a wrong number of arguments).
_STATIC_ERRORS = (
    jmespath_errors.UnknownFunctionError,
    jmespath_errors.ArityError,
    jmespath_errors.VariadictArityError,
)


@functools.lru_cache(maxsize=4096)
def _compile(expression: str) -> ParsedResult:
    return jmespath.compile(expression)


def check_expression(expression: str, path: str) -> None:
    """Raise :class:`DefinitionError` at ``path`` unless ``expression`` is valid JMESPath."""
    if not expression.strip():
        raise DefinitionError("empty expression", path=path)
    try:
        parsed = _compile(expression)
    except jmespath_errors.JMESPathError as exc:
        raise DefinitionError(f"invalid JMESPath {expression!r}: {exc}", path=path) from exc
    try:
        parsed.search({})
    except _STATIC_ERRORS as exc:
        raise DefinitionError(f"invalid JMESPath {expression!r}: {exc}", path=path) from exc
    except jmespath_errors.JMESPathError:
        pass  # a type error on the empty document says nothing about real data


def evaluate(expression: str, data: Any, path: str = "") -> Any:
    """Evaluate ``expression`` over ``data``.

    Raises:
        DefinitionError: The expression does not compile or fails on this data.
    """
    try:
        return _compile(expression).search(data)
    except jmespath_errors.JMESPathError as exc:
        raise DefinitionError(f"expression {expression!r} failed: {exc}", path=path) from exc


def evaluate_mapping(mapping: Mapping[str, str], data: Any, path: str = "") -> dict[str, Any]:
    """Evaluate every expression of ``mapping`` over ``data``; keys are kept."""
    return {key: evaluate(expr, data, f"{path}.{key}") for key, expr in mapping.items()}


def is_truthy(value: Any) -> bool:
    """Return JMESPath truthiness: ``null``, ``false``, ``""``, ``[]``, ``{}`` are false."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True
