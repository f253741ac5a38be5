"""The public surface is deliberate: adding or removing a name is a visible change."""

import saga


def test_top_level_exports() -> None:
    assert saga.__all__ == [
        "CoordinatorRuntime",
        "Participant",
        "ParticipantConfig",
        "RetryPolicy",
        "RuntimeConfig",
        "SagaBuilder",
        "SagaDefinition",
        "Topics",
        "compensatable",
        "errors",
        "load_file",
        "pivot",
        "retriable",
        "start_saga",
        "wait",
    ]
    for name in saga.__all__:
        assert getattr(saga, name) is not None
