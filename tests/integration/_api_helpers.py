"""Shared by the API and CLI tests: small definitions, a store on a fresh database, and a
way to drive a saga into a state (stuck, ...) by running the engine over events and
persisting each decision the way the coordinator does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select

from contracts import Envelope
from saga.coordinator import DefinitionCache, decision_writes
from saga.definition import RetryPolicy, SagaBuilder, SagaDefinition, compensatable, pivot, wait
from saga.engine import Event, SagaState, StepFailed, StepSucceeded, transition
from saga.store import SqlStore
from saga.store.tables import outbox
from saga.topics import Topics

ONCE = RetryPolicy(max_attempts=1)

BOOKING: SagaDefinition = (
    SagaBuilder("booking", version=1)
    .add(
        compensatable(
            "reserve",
            participant="inventory",
            command="inventory.reserve",
            compensation="inventory.release",
            input={"order_id": "order_id"},
            retry=ONCE,
            compensation_retry=ONCE,
        ),
        compensatable(
            "charge",
            participant="payments",
            command="payments.charge",
            compensation="payments.refund",
            input={"order_id": "order_id"},
            retry=ONCE,
            compensation_retry=ONCE,
        ),
        pivot("confirm", participant="orders", command="orders.confirm"),
    )
    .build()
)
"""reserve -> charge -> confirm (pivot); one attempt each, so failures get stuck fast."""

APPROVAL: SagaDefinition = (
    SagaBuilder("approval", version=1)
    .add(
        wait("approve", signal="approved", timeout_ms=3_600_000),
        pivot("confirm", participant="orders", command="orders.confirm"),
    )
    .build()
)
"""Waits for the ``approved`` signal, then confirms."""

DEFINITIONS = [BOOKING, APPROVAL]

STUCK_IN_COMPENSATION: list[Event] = [
    StepSucceeded(step="reserve", attempt=1, compensation=False),
    StepFailed(step="charge", attempt=1, code="declined", compensation=False),
    StepFailed(step="reserve", attempt=1, code="release.broken", compensation=True),
]
"""BOOKING: reserve ok, charge declined, reserve's compensation fails -> stuck."""


async def apply_events(
    store: SqlStore,
    definitions: DefinitionCache,
    saga_id: UUID,
    events: list[Event],
    *,
    paused: frozenset[str] = frozenset(),
) -> SagaState:
    """Apply events to a stored saga as the coordinator would (one transaction each).

    ``paused``: the participants whose circuits are open (their commands are deferred).
    """
    now = datetime.now(UTC)
    state: SagaState | None = None
    for event in events:
        row = await store.get_saga(str(saga_id))
        assert row is not None
        before = SagaState.model_validate(row.state)
        definition = await definitions.get(before.saga_type, before.saga_version)
        assert definition is not None
        decision = transition(before, event, definition, now, paused=paused)
        assert decision.outcome == "applied", decision.reason
        writes = decision_writes(decision, before=before, topics=Topics(), now=now)
        async with store.transaction() as tx:
            await tx.save_sagas(writes.sagas)
            await tx.record_steps(writes.steps)
            await tx.append_audit(writes.audit)
        state = decision.state
    assert state is not None
    return state


async def outbox_rows(store: SqlStore, **where: Any) -> list[Any]:
    """Outbox rows, filtered by column equality, in id order."""
    stmt = select(outbox).order_by(outbox.c.id)
    for column, value in where.items():
        stmt = stmt.where(outbox.c[column] == value)
    async with store.engine.connect() as conn:
        return list(await conn.execute(stmt))


def envelope_of(row: Any) -> Envelope:
    """The envelope an outbox row carries."""
    return Envelope.from_bytes(bytes(row.payload))
