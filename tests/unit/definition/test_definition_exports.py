"""Pin the public API of saga.definition."""

import saga.definition

EXPECTED = [
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


def test_public_api() -> None:
    assert saga.definition.__all__ == EXPECTED
    for name in EXPECTED:
        assert getattr(saga.definition, name) is not None
