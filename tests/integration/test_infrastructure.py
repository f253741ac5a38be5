"""The infrastructure is real: Kafka transactions and both databases."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.kafka


async def _read_all(bootstrap: str, topic: str, isolation: str, expect: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation,
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for msgs in batch.values():
                got.extend(m.value for m in msgs)
            if len(got) >= expect and not batch:
                break
    finally:
        await consumer.stop()
    return got


async def test_read_committed_consumer_sees_only_committed_transactions(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}smoke"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        transactional_id=f"{topic_prefix}smoke-tx",
        enable_idempotence=True,
        acks="all",
    )
    await producer.start()
    try:
        async with producer.transaction():
            for i in range(3):
                await producer.send(topic, f"committed-{i}".encode(), key=b"k")
        await producer.begin_transaction()
        for i in range(2):
            await producer.send(topic, f"aborted-{i}".encode(), key=b"k")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topic, b"committed-3", key=b"k")
    finally:
        await producer.stop()

    committed = await _read_all(kafka_bootstrap, topic, "read_committed", 4)
    uncommitted = await _read_all(kafka_bootstrap, topic, "read_uncommitted", 6)

    assert committed == [b"committed-0", b"committed-1", b"committed-2", b"committed-3"]
    assert sorted(uncommitted) == sorted([*committed, b"aborted-0", b"aborted-1"]), (
        "the aborted batch must have reached the log, or the test proves nothing"
    )


@pytest.mark.postgres
async def test_sqlalchemy_async_round_trip(db_engine: AsyncEngine) -> None:
    meta = MetaData()
    things = Table(
        "smoke_things",
        meta,
        Column("id", Integer, primary_key=True),
        Column("name", String(50), nullable=False),
    )
    name = uuid.uuid4().hex
    async with db_engine.begin() as conn:
        await conn.run_sync(meta.create_all)
        await conn.execute(insert(things).values(id=1, name=name))
    async with db_engine.connect() as conn:
        rows = (await conn.execute(select(things.c.name))).scalars().all()
    assert rows == [name]
    assert db_engine.dialect.name in {"sqlite", "postgresql"}


async def test_delete_topics_with_prefix_deletes_that_prefix_only(kafka_bootstrap: str) -> None:
    from _test_topics import new_prefix

    from saga.errors import ConfigError
    from saga.kafka import TopicSpec, delete_topics_with_prefix, ensure_topics

    doomed, kept = new_prefix(), new_prefix()
    names = [f"{p}{n}" for p in (doomed, kept) for n in ("a", "b")]
    await ensure_topics(kafka_bootstrap, [TopicSpec(name=n, partitions=1) for n in names])

    deleted = await delete_topics_with_prefix(kafka_bootstrap, doomed)

    assert deleted == [f"{doomed}a", f"{doomed}b"]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        left = {t for t in await admin.list_topics() if t.startswith((doomed, kept))}
    finally:
        await admin.close()
    assert left == {f"{kept}a", f"{kept}b"}
    with pytest.raises(ConfigError, match="non-empty prefix"):
        await delete_topics_with_prefix(kafka_bootstrap, "")
