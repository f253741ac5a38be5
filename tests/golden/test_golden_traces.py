"""Golden decision traces: event sequences with their expected decisions, as JSON.

Each ``tests/golden/*.json`` file holds one scenario of the order-placement saga: the
definition's hash, and per event the time, the paused participants, the event and the
full decision. The test replays the events and compares every decision, so any change
of engine (or example definition) behaviour shows up as a diff in review.

After an intended change, regenerate and review the diff::

    SAGA_UPDATE_GOLDEN=1 .venv/bin/pytest tests/golden
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from saga.definition import load_file
from saga.engine import (
    Event,
    OperatorAbort,
    OperatorRetryStep,
    ParticipantResumed,
    SagaState,
    SignalReceived,
    StartSaga,
    StepFailed,
    StepSucceeded,
    TimerFired,
    TimerKind,
    parse_event,
    transition,
)

HERE = Path(__file__).parent
UPDATE = os.environ.get("SAGA_UPDATE_GOLDEN") == "1"
T0 = datetime(2025, 1, 1, 9, 0, tzinfo=UTC)
SAGA_ID = UUID("01941f29-0000-7000-8000-00000000cafe")
CORRELATION = UUID("01941f29-0000-7000-8000-00000000beef")
INPUT = {
    "order_id": "o-42",
    "customer_id": "c-7",
    "items": [{"sku": "book", "qty": 2}],
    "total": 40,
    "shipping_address": "1 Main St",
}

Step = tuple[Event, frozenset[str]]

# A richer definition than the shipped example: parallel group, conditional wait step.
ORDER_PLACEMENT = load_file(Path(__file__).with_name("order_fulfilment.yaml"))


def _ok(step: str, attempt: int = 1, **output: Any) -> StepSucceeded:
    return StepSucceeded(step=step, attempt=attempt, output=output)


def _undone(step: str, attempt: int = 1) -> StepSucceeded:
    return StepSucceeded(step=step, attempt=attempt, compensation=True)


def _start(**extra: Any) -> StartSaga:
    return StartSaga(
        saga_id=SAGA_ID,
        input={**INPUT, **extra},
        correlation_id=CORRELATION,
        idempotency_key="order-o-42",
    )


NONE: frozenset[str] = frozenset()

SCENARIOS: dict[str, list[Step]] = {
    "order_placement_completed": [
        (_start(), NONE),
        (_ok("create_order", status="new"), NONE),
        (_ok("authorize_payment", authorization_id="auth-1"), NONE),
        (_ok("reserve_stock", reservation_id="res-1"), NONE),
        (_ok("capture_payment"), NONE),
        (_ok("ship_order", tracking_number="TRK-1"), NONE),
        (_ok("ship_order", tracking_number="TRK-1"), NONE),  # duplicate: ignored
        (_ok("confirm_order"), NONE),
    ],
    "order_placement_payment_declined": [
        (_start(), NONE),
        (_ok("create_order", status="new"), NONE),
        (StepFailed(step="authorize_payment", attempt=1, code="payments.declined"), NONE),
        (_ok("reserve_stock", reservation_id="res-1"), NONE),  # awaited sibling
        (_undone("reserve_stock"), NONE),
        (_undone("create_order"), NONE),
    ],
    "order_placement_approval_timeout_stuck_then_retried": [
        (_start(total=5000), NONE),
        (_ok("create_order", status="new"), frozenset({"inventory"})),  # inventory paused
        (
            StepFailed(
                step="authorize_payment",
                attempt=1,
                code="payments.unavailable",
                retriable=True,
                retry_after_ms=2000,
            ),
            frozenset({"inventory"}),
        ),
        (TimerFired(timer=TimerKind.RETRY_DUE, step="authorize_payment", attempt=2), NONE),
        (ParticipantResumed(participant="inventory"), NONE),
        (_ok("authorize_payment", attempt=2, authorization_id="auth-2"), NONE),
        (TimerFired(timer=TimerKind.STEP_TIMEOUT, step="reserve_stock", attempt=1), NONE),
        (TimerFired(timer=TimerKind.RETRY_DUE, step="reserve_stock", attempt=2), NONE),
        (_ok("reserve_stock", attempt=2, reservation_id="res-2"), NONE),
        (_ok("reserve_stock", attempt=1, reservation_id="res-1"), NONE),  # stale
        (TimerFired(timer=TimerKind.SIGNAL_TIMEOUT, step="manager_approval", attempt=1), NONE),
        (
            StepFailed(step="reserve_stock", attempt=1, code="inventory.down", compensation=True),
            NONE,
        ),
        (OperatorRetryStep(step="reserve_stock", reason="inventory is back", actor="alice"), NONE),
        (_undone("reserve_stock", attempt=2), NONE),
        (_undone("authorize_payment"), NONE),
        (_undone("create_order"), NONE),
    ],
    "order_placement_approved_then_forward_only": [
        (_start(total=5000), NONE),
        (SignalReceived(name="order.approved", data={"approver": "bob"}), NONE),  # early
        (_ok("create_order", status="new"), NONE),
        (_ok("reserve_stock", reservation_id="res-1"), NONE),
        (_ok("authorize_payment", authorization_id="auth-1"), NONE),
        (_ok("capture_payment"), NONE),
        (OperatorAbort(reason="customer called", actor="carol"), NONE),  # rejected
        (TimerFired(timer=TimerKind.DEADLINE), NONE),  # after the pivot: ignored
        (
            StepFailed(step="ship_order", attempt=1, code="shipping.busy", retriable=False),
            NONE,
        ),
        (TimerFired(timer=TimerKind.RETRY_DUE, step="ship_order", attempt=2), NONE),
        (_ok("ship_order", attempt=2, tracking_number="TRK-9"), NONE),
        (_ok("confirm_order"), NONE),
    ],
}


def _trace(name: str, steps: list[Step]) -> dict[str, Any]:
    state: SagaState | None = None
    now = T0
    rows = []
    for event, paused in steps:
        now += timedelta(seconds=1)
        decision = transition(state, event, ORDER_PLACEMENT, now, paused=paused)
        if decision.state is not None:
            state = decision.state
        rows.append(
            {
                "at": now.isoformat(),
                "paused": sorted(paused),
                "event": event.model_dump(mode="json"),
                "decision": decision.model_dump(mode="json"),
            }
        )
    return {
        "scenario": name,
        "definition": {
            "name": ORDER_PLACEMENT.name,
            "version": ORDER_PLACEMENT.version,
            "content_hash": ORDER_PLACEMENT.content_hash,
        },
        "steps": rows,
    }


def _replay(trace: dict[str, Any]) -> list[dict[str, Any]]:
    state: SagaState | None = None
    out = []
    for row in trace["steps"]:
        event = parse_event(row["event"])
        now = datetime.fromisoformat(row["at"])
        decision = transition(state, event, ORDER_PLACEMENT, now, paused=frozenset(row["paused"]))
        if decision.state is not None:
            state = decision.state
        out.append(decision.model_dump(mode="json"))
    return out


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_trace(name: str) -> None:
    path = HERE / f"{name}.json"
    fresh = _trace(name, SCENARIOS[name])
    if UPDATE:
        path.write_text(json.dumps(fresh, indent=1, sort_keys=True) + "\n")
    assert path.exists(), f"missing {path.name}; run with SAGA_UPDATE_GOLDEN=1"
    golden = json.loads(path.read_text())
    assert golden["definition"] == fresh["definition"], "the example definition changed"
    assert [r["event"] for r in golden["steps"]] == [r["event"] for r in fresh["steps"]]
    replayed = _replay(golden)
    for i, (want, got) in enumerate(
        zip([r["decision"] for r in golden["steps"]], replayed, strict=True)
    ):
        assert got == want, f"{name}: decision {i} ({golden['steps'][i]['event']['type']}) drifted"


def test_no_stray_golden_files() -> None:
    assert {p.stem for p in HERE.glob("*.json")} <= set(SCENARIOS)
