"""Pin the public API of saga.definition."""

import saga.definition

EXPECTED = [
    "DEFAULT_COMPENSATION_RETRY",
    "UNBOUNDED",
    "UNBOUNDED_RETRY_THRESHOLD",
    "DefinitionRegistry",
    "OnTimeout",
    "RetryPolicy",
    "SagaBuilder",
    "SagaDefinition",
    "Step",
    "StepKind",
    "StepSpec",
    "ancestors",
    "canonical_json",
    "check_expression",
    "commands_topic",
    "compensatable",
    "content_hash_of",
    "definition_from_dict",
    "definition_to_dict",
    "descendants",
    "dump_yaml",
    "evaluate",
    "evaluate_mapping",
    "is_truthy",
    "load_file",
    "load_yaml",
    "parse_duration_ms",
    "pivot",
    "retriable",
    "to_mermaid",
    "wait",
]


def test_public_api() -> None:
    assert saga.definition.__all__ == EXPECTED
    for name in EXPECTED:
        assert getattr(saga.definition, name) is not None
