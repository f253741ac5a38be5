"""A store with sagas in every status, for the operator console's tests.

Sagas are started through :class:`saga.operations.SagaOperations` and moved on by the
pure engine, each decision persisted the way the coordinator does (see
``_api_helpers.apply_events``); one saga's next command is deferred for a paused
participant, as the coordinator does while that participant's circuit is open.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from _api_helpers import DEFINITIONS, STUCK_IN_COMPENSATION, apply_events

from saga.coordinator import (
    BreakerPolicy,
    BreakerReporter,
    CircuitBreakers,
    DefinitionCache,
)
from saga.engine import (
    OperatorAbort,
    StepFailed,
    StepSucceeded,
)
from saga.operations import SagaOperations
from saga.store import SqlStore
from saga.topics import Topics

OK = [
    StepSucceeded(step="reserve", attempt=1, compensation=False, output={"reservation": "r-1"}),
    StepSucceeded(step="charge", attempt=1, compensation=False),
    StepSucceeded(step="confirm", attempt=1, compensation=False),
]
DECLINED = [
    StepSucceeded(step="reserve", attempt=1, compensation=False),
    StepFailed(
        step="charge", attempt=1, code="payment.declined", message="card declined",
        compensation=False,
    ),
]  # fmt: skip
COMPENSATED = [*DECLINED, StepSucceeded(step="reserve", attempt=1, compensation=True)]


async def seed(store: SqlStore, topics: Topics) -> dict[str, Any]:
    """Register the definitions and make sagas in every status; returns their ids."""
    cache = DefinitionCache(store)
    await cache.register(DEFINITIONS)
    if await store.partition_count(topics.replies) is None:
        await store.register_partitions(topics.coordinator_group, topics.replies, 1)
    ops = SagaOperations(store, cache, topics)
    ids: dict[str, Any] = {}

    async def start(name: str, saga_type: str = "booking", **extra: Any) -> UUID:
        started = await ops.start(saga_type, {"order_id": f"order-{name}", **extra}, actor="seed")
        ids[name] = str(started.saga_id)
        return started.saga_id

    await start("running")
    await start("waiting", "approval")
    await apply_events(store, cache, await start("completed"), OK)
    await apply_events(store, cache, await start("compensated"), COMPENSATED)
    await apply_events(store, cache, await start("compensating"), DECLINED)
    await apply_events(store, cache, await start("stuck"), STUCK_IN_COMPENSATION)
    await apply_events(store, cache, await start("stuck2"), STUCK_IN_COMPENSATION)
    aborted = await start("aborted")
    await apply_events(store, cache, aborted, STUCK_IN_COMPENSATION)
    await apply_events(store, cache, aborted, [OperatorAbort(reason="written off", actor="seed")])
    deferred = await start("deferred")
    await apply_events(
        store,
        cache,
        deferred,
        [StepSucceeded(step="reserve", attempt=1, compensation=False)],
        paused=frozenset({"payments"}),
    )
    # One coordinator's breakers: payments open (it failed), inventory closed.
    breakers = CircuitBreakers(BreakerPolicy(min_calls=1, failure_ratio=0.5))
    now = datetime.now(UTC)
    breakers.record("payments", ok=False, now=now)
    breakers.record("inventory", ok=True, now=now)
    assert await BreakerReporter(store, "host-a:4242:5e1f0c2a").report(breakers, now)
    return ids
