"""A saga whose input lacks a field a participant needs compensates at once, and says why.

Real Kafka, both databases, the coordinator runtime and the example services.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from _scripted import fast_runtime_config, saga_in

from saga.chaos import saga_input
from saga.coordinator import CoordinatorRuntime, start_saga
from saga.definition.examples.order_placement import ORDER_PLACEMENT
from saga.engine import SagaStatus
from saga.participant import INVALID_COMMAND
from saga.settings import Settings
from saga.topics import Topics
from services import run_services

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


async def test_an_input_without_a_needed_field_compensates_at_once_with_the_reason(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    config = fast_runtime_config(database_url, kafka_bootstrap, topics, partitions=2)
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        partitions=2,
    )
    order = saga_input(1, None, topic_prefix)
    del order["customer_id"]  # payments.authorize needs it; inventory does not
    stop = asyncio.Event()
    async with CoordinatorRuntime(config, [ORDER_PLACEMENT]) as runtime:
        services = asyncio.create_task(run_services(settings, stop=stop))
        coordinator = asyncio.create_task(runtime.run())
        try:
            started = await start_saga(
                runtime.store,
                runtime.definitions,
                topics,
                ORDER_PLACEMENT.name,
                order,
                now=datetime.now(UTC),
            )
            sid = str(started.saga_id)
            # Well within the payment step's 5 s timeout and its 3 attempts.
            row = await saga_in(
                runtime.store, sid, {SagaStatus.COMPENSATED, SagaStatus.STUCK}, within_s=30
            )
            assert row.status == SagaStatus.COMPENSATED
            steps = await runtime.store.step_executions(sid)
            payment = [s for s in steps if s.step == "authorize_payment" and s.kind == "command"]
            assert [s.attempt for s in payment] == [1], "a permanent failure: no retry"
            assert payment[0].error_code == INVALID_COMMAND
            assert "customer_id" in (payment[0].error_message or "")
        finally:
            stop.set()
            runtime.stop()
            await asyncio.wait_for(coordinator, 30)
            await asyncio.wait_for(services, 30)
