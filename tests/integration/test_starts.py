"""Sagas started through Kafka: the starts topic, triggers, and the initiator.

Real Kafka, both databases, the coordinator runtime. A start request delivered three
times starts one saga; an event a trigger matches, delivered three times, starts one; a
service's start request commits or rolls back with its business write; a bad start is
refused with the field's path on every path (dead letter and rejection event, or 4xx).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from _participant_helpers import read_first
from _scripted import fast_runtime_config, looping, saga_in
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner
from sqlalchemy import select

from contracts import START_REJECTED, Envelope, StartRequest
from saga.chaos import saga_input
from saga.cli import cli
from saga.coordinator import CoordinatorRuntime, start_saga
from saga.deadletter import REASON_HEADER
from saga.definition import SagaBuilder, wait
from saga.definition.examples.order_placement import ORDER_PLACEMENT
from saga.errors import InvalidInput
from saga.kafka import TopicSpec, ensure_topics
from saga.settings import Settings
from saga.store import create_engine
from saga.store.tables import sagas
from saga.topics import Topics
from services import orders, run_services
from services._runner import build, create_service_tables

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

ORDER_SCHEMA = {
    "type": "object",
    "required": ["order_id"],
    "properties": {"order_id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
}
AWAIT_GO = (
    SagaBuilder("await_go", input_schema=ORDER_SCHEMA)
    .add(wait("go", signal="go", timeout_ms=600_000))
    .build()
)
FOLLOW_UP = (
    SagaBuilder("order_follow_up")
    .trigger("shop.events", type="order.placed", input={"order_id": "payload.order_id"})
    .add(wait("go", signal="go", timeout_ms=600_000))
    .build()
)


@asynccontextmanager
async def running(
    database_url: str, kafka_bootstrap: str, topics: Topics
) -> AsyncIterator[CoordinatorRuntime]:
    await ensure_topics(kafka_bootstrap, [TopicSpec(name=topics.prefix + "shop.events")])
    config = fast_runtime_config(database_url, kafka_bootstrap, topics, partitions=2)
    async with CoordinatorRuntime(config, [AWAIT_GO, FOLLOW_UP]) as runtime, looping(runtime):
        async with asyncio.timeout(60):
            while runtime.readiness() is not None:  # noqa: ASYNC110 - it has no event
                await asyncio.sleep(0.1)
        yield runtime


async def sagas_of(runtime: CoordinatorRuntime, saga_type: str) -> list[Any]:
    async with runtime.engine.connect() as conn:
        rows = await conn.execute(
            select(sagas.c.id, sagas.c.idempotency_key, sagas.c.context).where(
                sagas.c.saga_type == saga_type
            )
        )
        return list(rows)


async def wait_for_sagas(
    runtime: CoordinatorRuntime, saga_type: str, count: int, *, settle_s: float = 1.5
) -> list[Any]:
    """The sagas of a type, once ``count`` exist and no more came for ``settle_s``."""
    async with asyncio.timeout(60):
        # Polling the database is the point: it is what the starter changes.
        while len(await sagas_of(runtime, saga_type)) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    await asyncio.sleep(settle_s)  # a duplicate start would show up meanwhile
    return await sagas_of(runtime, saga_type)


async def saga_for_key(runtime: CoordinatorRuntime, key: str) -> str:
    async with asyncio.timeout(60):
        while (sid := await runtime.store.saga_id_for_key(key)) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    return sid


async def saga_reaches(runtime: CoordinatorRuntime, saga_id: str, status: str) -> None:
    await saga_in(runtime.store, saga_id, {status})


async def publish(bootstrap: str, topic: str, values: list[bytes], key: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def test_a_start_request_delivered_three_times_starts_one_saga(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    request = StartRequest(saga_type="await_go", input={"order_id": "o-1", "qty": 2})
    async with running(database_url, kafka_bootstrap, topics) as runtime:
        await publish(kafka_bootstrap, topics.starts, [request.to_bytes()] * 3, b"o-1")
        [saga] = await wait_for_sagas(runtime, "await_go", 1)
        assert saga.idempotency_key == f"start:{request.message_id}"
        assert saga.context == {"order_id": "o-1", "qty": 2}
        trail = await runtime.store.audit_trail(saga.id)
        requested = [r for r in trail if r.kind == "start.requested"]
        assert len(requested) == 1
        assert requested[0].detail["topic"] == topics.starts


async def test_an_event_a_trigger_matches_starts_one_saga_however_often_it_comes(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    event = {"message_id": "evt-1", "type": "order.placed", "payload": {"order_id": "o-7"}}
    other = {"message_id": "evt-2", "type": "order.cancelled", "payload": {"order_id": "o-8"}}
    async with running(database_url, kafka_bootstrap, topics) as runtime:
        values = [json.dumps(event).encode()] * 3 + [json.dumps(other).encode(), b"not json"]
        await publish(kafka_bootstrap, topics.prefix + "shop.events", values, b"o-7")
        [saga] = await wait_for_sagas(runtime, "order_follow_up", 1)
        assert saga.context == {"order_id": "o-7"}
        assert saga.idempotency_key == "trigger:order_follow_up:evt-1"


async def test_bad_start_requests_are_dead_lettered_with_the_reason_and_the_sender_told(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    unknown = StartRequest(saga_type="no_such_saga", input={})
    invalid = StartRequest(saga_type="await_go", input={"order_id": "o-2", "qty": 0})
    async with running(database_url, kafka_bootstrap, topics) as runtime:
        await publish(
            kafka_bootstrap,
            topics.starts,
            [unknown.to_bytes(), invalid.to_bytes(), b'{"saga_type": 5}'],
            b"k",
        )
        dead = await read_first(kafka_bootstrap, topics.dlq, 3)
        reasons = [dict(r.headers)[REASON_HEADER].decode() for r in dead]
        assert "saga_type: unknown saga type no_such_saga" in reasons[0]
        assert reasons[1].startswith("input.qty: ")
        assert "minimum" in reasons[1] or "less than" in reasons[1]
        assert reasons[2].startswith("malformed start request: saga_type")
        assert [r.value for r in dead[:2]] == [unknown.to_bytes(), invalid.to_bytes()]
        events = [
            Envelope.from_bytes(r.value)
            for r in await read_first(kafka_bootstrap, topics.events, 3)
        ]
        rejected = [e for e in events if e.type == START_REJECTED]
        assert len(rejected) == 3
        assert rejected[1].payload["path"] == "input.qty"
        assert rejected[1].payload["request_message_id"] == str(invalid.message_id)
        assert await sagas_of(runtime, "await_go") == []


async def test_every_start_path_validates_the_input_against_the_schema(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    async with running(database_url, kafka_bootstrap, topics) as runtime:
        with pytest.raises(InvalidInput) as err:
            await start_saga(
                runtime.store,
                runtime.definitions,
                topics,
                "await_go",
                {"qty": 3},
                now=datetime.now(UTC),
            )
        assert err.value.path == "input"
        assert "'order_id' is a required property" in err.value.message
        env = {
            "SAGA_DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "SAGA_TOPIC_PREFIX": topic_prefix,
        }
        result = await asyncio.to_thread(
            CliRunner().invoke,
            cli,
            ["start", "await_go", "--input", '{"order_id": "o-3", "qty": "two"}'],
            env=env,
        )
        assert result.exit_code == 1
        assert "input.qty: 'two' is not of type 'integer'" in result.output


class Refused(Exception):
    """A business rule that makes the service roll its transaction back."""


@pytest.mark.slow
async def test_the_order_service_places_an_order_and_starts_its_saga_in_one_transaction(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        partitions=2,
    )
    config = fast_runtime_config(database_url, kafka_bootstrap, topics, partitions=2)
    kept, refused = saga_input(1, None, topic_prefix), saga_input(2, None, topic_prefix)
    stop = asyncio.Event()
    async with CoordinatorRuntime(config, [ORDER_PLACEMENT]) as runtime:
        shop_db = create_engine(database_url)
        await create_service_tables(shop_db)
        others = asyncio.create_task(
            run_services(settings, ["inventory", "payments", "shipping"], stop=stop)
        )
        coordinator = asyncio.create_task(runtime.run())
        try:
            async with build("orders", settings, shop_db) as orders_service:
                service = asyncio.create_task(orders_service.run())
                try:
                    async with shop_db.begin() as conn:
                        request = await orders.place_order(orders_service, conn, kept)
                    with contextlib.suppress(Refused):
                        async with shop_db.begin() as conn:
                            await orders.place_order(orders_service, conn, refused)
                            raise Refused("out of credit: the whole transaction rolls back")
                    sid = await saga_for_key(runtime, "order:" + kept["order_id"])
                    await saga_reaches(runtime, sid, "completed")
                    assert request.effective_idempotency_key == "order:" + kept["order_id"]
                    await asyncio.sleep(1.0)  # a start of the rolled-back order would show
                    assert (
                        await runtime.store.saga_id_for_key("order:" + refused["order_id"]) is None
                    )
                    async with shop_db.connect() as conn:
                        ids = (await conn.execute(select(orders.placed.c.order_id))).scalars().all()
                    assert ids == [kept["order_id"]], "the rolled-back order left nothing"
                finally:
                    orders_service.stop()
                    await asyncio.wait_for(service, 30)
        finally:
            stop.set()
            runtime.stop()
            await asyncio.wait_for(coordinator, 30)
            await asyncio.wait_for(others, 30)
            await shop_db.dispose()
