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


def test_subpackage_all_is_sorted() -> None:
    import saga.coordinator
    import saga.definition
    import saga.engine
    import saga.relay
    import saga.store

    for module in (saga.coordinator, saga.definition, saga.engine, saga.relay, saga.store):
        assert list(module.__all__) == sorted(module.__all__), module.__name__
