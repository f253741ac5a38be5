"""Pin the public API of saga.engine."""

from pathlib import Path

import saga.engine

EXPECTED = [
    "TERMINAL",
    "TRANSITIONS",
    "AuditEntry",
    "CompensationStatus",
    "Decision",
    "ErrorInfo",
    "Event",
    "LifecycleEvent",
    "OperatorAbort",
    "OperatorEvent",
    "OperatorMarkCompensated",
    "OperatorResume",
    "OperatorRetryStep",
    "OperatorSkipStep",
    "Outcome",
    "Outgoing",
    "ParticipantResumed",
    "SagaState",
    "SagaStatus",
    "SignalReceived",
    "StartSaga",
    "StatusTrigger",
    "StepFailed",
    "StepState",
    "StepStatus",
    "StepSucceeded",
    "TimerFired",
    "TimerKey",
    "TimerKind",
    "TimerSpec",
    "derive_message_id",
    "derive_seed",
    "event_from_envelope",
    "jitter_seed",
    "next_status",
    "parse_event",
    "retry_delay",
    "table_to_mermaid",
    "transition",
]


def test_public_api() -> None:
    assert saga.engine.__all__ == EXPECTED
    for name in EXPECTED:
        assert getattr(saga.engine, name) is not None


def test_engine_imports_no_io() -> None:
    import sys

    banned = ("opentelemetry", "aiokafka", "sqlalchemy", "random", "asyncio")
    engine_modules = [m for m in sys.modules if m.startswith("saga.engine")]
    assert engine_modules
    for name in engine_modules:
        source = getattr(sys.modules[name], "__file__", "") or ""
        if source:
            text = Path(source).read_text(encoding="utf-8")
            for b in banned:
                assert f"import {b}" not in text, f"{name} imports {b}"
            assert "datetime.now" not in text
            assert ".now()" not in text
