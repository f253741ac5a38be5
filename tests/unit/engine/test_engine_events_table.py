"""Events as JSON, envelopes to events, the status table, ids and retry helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest

from contracts import REPLY_FAILED, REPLY_SUCCEEDED, Envelope, MessageKind
from saga.definition import RetryPolicy
from saga.engine import (
    TERMINAL,
    TRANSITIONS,
    Event,
    OperatorAbort,
    OperatorMarkCompensated,
    OperatorResume,
    OperatorRetryStep,
    OperatorSkipStep,
    ParticipantResumed,
    SagaStatus,
    SignalReceived,
    StartSaga,
    StatusTrigger,
    StepFailed,
    StepSucceeded,
    TimerFired,
    TimerKind,
    derive_message_id,
    event_from_envelope,
    next_status,
    parse_event,
    retry_delay,
    table_to_mermaid,
)
from saga.errors import ContractError

SID = UUID("01890000-0000-7000-8000-000000000001")
NOW = datetime(2025, 1, 1, tzinfo=UTC)

ALL_EVENTS = [
    StartSaga(saga_id=SID, input={"x": 1}, idempotency_key="k"),
    StepSucceeded(step="a", attempt=2, output={"y": 2}),
    StepFailed(step="a", attempt=1, code="c", retriable=True, retry_after_ms=10, compensation=True),
    TimerFired(timer=TimerKind.RETRY_DUE, step="a", attempt=3),
    SignalReceived(name="approval", data={"ok": True}),
    OperatorAbort(reason="r", actor="bob"),
    OperatorRetryStep(step="a"),
    OperatorSkipStep(step="a"),
    OperatorMarkCompensated(),
    OperatorResume(),
    ParticipantResumed(participant="svc"),
]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: e.type)
def test_events_round_trip_as_json(event: Event) -> None:
    assert parse_event(event.model_dump_json()) == event
    assert parse_event(event.model_dump(mode="json")) == event


@pytest.mark.parametrize(
    "data",
    [{"type": "nope"}, {"type": "step_succeeded", "step": "a", "attempt": 0}, "not json"],
)
def test_parse_event_rejects_garbage(data: object) -> None:
    with pytest.raises(ContractError):
        parse_event(data)  # type: ignore[arg-type]


def _env(kind: MessageKind, type_: str, payload: dict[str, object], **kw: object) -> Envelope:
    return Envelope(
        saga_id=SID, saga_type="t", saga_version=1, kind=kind, type=type_, payload=payload, **kw
    )


def test_event_from_reply_envelopes() -> None:
    cause = UUID(int=5)
    ok = event_from_envelope(
        _env(
            MessageKind.REPLY,
            REPLY_SUCCEEDED,
            {"output": {"a": 1}},
            step="s",
            attempt=2,
            causation_id=cause,
        )
    )
    assert ok == StepSucceeded(
        step="s",
        attempt=2,
        output={"a": 1},
        causation_id=cause,
        message_id=ok.message_id,  # type: ignore[union-attr]
    )
    failed = event_from_envelope(
        _env(MessageKind.REPLY, REPLY_FAILED, {"code": "x", "retriable": True}, step="s")
    )
    assert isinstance(failed, StepFailed)
    assert (failed.code, failed.retriable) == ("x", True)


def test_event_from_timer_and_signal_envelopes() -> None:
    timer = event_from_envelope(
        _env(MessageKind.TIMER, "timer.step_timeout", {}, step="s", attempt=3)
    )
    assert isinstance(timer, TimerFired)
    assert (timer.timer, timer.step, timer.attempt) == (TimerKind.STEP_TIMEOUT, "s", 3)
    signal = event_from_envelope(
        _env(MessageKind.SIGNAL, "signal", {"name": "go", "data": {"k": 1}})
    )
    assert isinstance(signal, SignalReceived)
    assert (signal.name, signal.data) == ("go", {"k": 1})


@pytest.mark.parametrize(
    "envelope",
    [
        _env(MessageKind.COMMAND, "x.do", {}, step="s"),
        _env(MessageKind.TIMER, "timer.bogus", {}),
        _env(MessageKind.REPLY, REPLY_FAILED, {"nope": 1}, step="s"),
    ],
)
def test_event_from_bad_envelopes(envelope: Envelope) -> None:
    with pytest.raises(ContractError):
        event_from_envelope(envelope)


def test_table_covers_every_status_and_terminals_are_absorbing() -> None:
    assert set(TRANSITIONS) == set(SagaStatus)
    for status in TERMINAL:
        assert TRANSITIONS[status] == {}
    initial = {SagaStatus.RUNNING, SagaStatus.QUEUED}
    reachable = initial | {t for edges in TRANSITIONS.values() for t in edges.values()}
    assert reachable == set(SagaStatus)


def test_next_status_refuses_unlisted_changes() -> None:
    assert next_status(SagaStatus.RUNNING, StatusTrigger.STEP_FAILED) is SagaStatus.COMPENSATING
    with pytest.raises(AssertionError):
        next_status(SagaStatus.COMPLETED, StatusTrigger.STEP_FAILED)


def test_every_trigger_is_in_the_table_and_keeps_its_string() -> None:
    used = {trigger for edges in TRANSITIONS.values() for trigger in edges}
    assert used == set(StatusTrigger)
    assert StatusTrigger.STEP_FAILED == "step_failed"
    assert str(StatusTrigger.OPERATOR_ABORT) == "operator_abort"


def test_table_drawing_lists_every_edge() -> None:
    drawing = table_to_mermaid()
    assert drawing.startswith("stateDiagram-v2")
    for source, edges in TRANSITIONS.items():
        for trigger, target in edges.items():
            assert f"{source} --> {target}: {trigger}" in drawing


def test_derive_message_id() -> None:
    one = derive_message_id(NOW, "a", 1)
    assert one == derive_message_id(NOW, "a", 1)
    assert one != derive_message_id(NOW, "a", 2)
    assert one.version == 7
    assert one.variant == "specified in RFC 4122"


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(None, 1000), (50, 1000), (5000, 5000)],
)
def test_retry_delay_honours_retry_after(retry_after: int | None, expected: int) -> None:
    policy = RetryPolicy(initial_delay_ms=1000, jitter=0)
    got = retry_delay(
        policy, budget_attempt=1, error_code="x", retriable=True, retry_after_ms=retry_after, seed=1
    )
    assert got == expected
