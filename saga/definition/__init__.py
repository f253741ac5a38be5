"""Saga definitions as data: one pydantic model, a Python builder and a YAML/JSON loader.

A :class:`SagaDefinition` is a DAG of :class:`Step` values (compensatable, pivot,
retriable or wait steps; parallel groups and conditions are expressed with
``depends_on`` and ``when``). Conditions and mappings are JMESPath expressions over the
saga context. Invalid definitions raise :class:`saga.errors.DefinitionError` whose
``path`` names the offending field.
"""

from saga.definition._builder import (
    SagaBuilder,
    StepSpec,
    compensatable,
    pivot,
    retriable,
    wait,
)
from saga.definition._expr import check_expression, evaluate, evaluate_mapping, is_truthy
from saga.definition._hash import canonical_json, content_hash_of
from saga.definition._input import declared_fields, validate_input
from saga.definition._lint import lint_warnings
from saga.definition._loader import (
    definition_from_dict,
    definition_to_dict,
    dump_yaml,
    load_file,
    load_yaml,
    parse_duration_ms,
)
from saga.definition._mermaid import to_mermaid
from saga.definition._model import (
    DEFAULT_COMPENSATION_RETRY,
    KIND_TRAITS,
    UNBOUNDED,
    UNBOUNDED_RETRY_THRESHOLD,
    IdempotencyFrom,
    KindTraits,
    LockRelease,
    OnTimeout,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepKind,
    Trigger,
    commands_topic,
)
from saga.definition._registry import DefinitionRegistry
from saga.definition._validate import ancestors, descendants

__all__ = [
    "DEFAULT_COMPENSATION_RETRY",
    "KIND_TRAITS",
    "UNBOUNDED",
    "UNBOUNDED_RETRY_THRESHOLD",
    "DefinitionRegistry",
    "IdempotencyFrom",
    "KindTraits",
    "LockRelease",
    "OnTimeout",
    "RetryPolicy",
    "SagaBuilder",
    "SagaDefinition",
    "Step",
    "StepKind",
    "StepSpec",
    "Trigger",
    "ancestors",
    "canonical_json",
    "check_expression",
    "commands_topic",
    "compensatable",
    "content_hash_of",
    "declared_fields",
    "definition_from_dict",
    "definition_to_dict",
    "descendants",
    "dump_yaml",
    "evaluate",
    "evaluate_mapping",
    "is_truthy",
    "lint_warnings",
    "load_file",
    "load_yaml",
    "parse_duration_ms",
    "pivot",
    "retriable",
    "to_mermaid",
    "validate_input",
    "wait",
]
