"""A definition's input schema: checked when the definition loads, applied to every start.

The schema is JSON Schema (draft 2020-12 unless it says ``$schema``), written in YAML
under ``input_schema:`` or derived from a pydantic model by the builder
(``SagaBuilder(..., input_model=Order)``). Every start (API, CLI, starts topic,
trigger) is validated with :func:`validate_input`, whose error names the field.
"""

from __future__ import annotations

from typing import Any

from jsonschema import exceptions as schema_errors
from jsonschema import validators
from jsonschema.protocols import Validator

from saga.errors import DefinitionError, InvalidInput

_validators: dict[str, Validator] = {}
"""Compiled validators by the definition's content hash."""


def check_input_schema(schema: dict[str, Any], path: str = "input_schema") -> None:
    """Raise :class:`DefinitionError` naming ``path`` when ``schema`` is not a JSON Schema."""
    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except schema_errors.SchemaError as exc:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)
        raise DefinitionError(f"not a valid JSON Schema: {exc.message}", path=path + where) from exc


def validate_input(
    schema: dict[str, Any] | None, data: Any, *, cache_key: str | None = None
) -> None:
    """Check a saga's input against its definition's schema (nothing to do without one).

    Args:
        schema: The definition's ``input_schema``.
        data: The input.
        cache_key: Reuse the compiled validator under this key (the content hash).

    Raises:
        InvalidInput: The input does not match; ``path`` names the first bad field
            (``input.lines[0].qty``), the message says what is wrong with it.
    """
    if schema is None:
        return
    validator = _validators.get(cache_key) if cache_key else None
    if validator is None:
        validator = validators.validator_for(schema)(schema)
        if cache_key:
            _validators[cache_key] = validator
    error = schema_errors.best_match(validator.iter_errors(data))
    if error is None:
        return
    path = "input" + "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
    )
    raise InvalidInput(error.message, path=path)


def declared_fields(schema: dict[str, Any] | None) -> set[str] | None:
    """The top-level input fields a schema declares (``None``: it allows any)."""
    if schema is None:
        return None
    props = schema.get("properties")
    if not isinstance(props, dict):
        return None
    if schema.get("additionalProperties", True) is not False and not props:
        return None
    return set(props)
