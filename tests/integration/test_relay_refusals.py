"""A row Kafka refuses for good is quarantined after a few attempts; its lane goes on.

Real Kafka, real SQLite and PostgreSQL. Kafka refuses a record over the client's size
limit (aiokafka says so before sending), one over its topic's ``max.message.bytes``
(the broker says so), and one for a topic whose name is invalid.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from click.testing import CliRunner, Result
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from test_relay import (
    assert_exactly_once_in_order,
    create_topic,
    insert_rows,
    read_committed,
    relay_config,
    wait_until_published,
)

from saga.cli import cli
from saga.errors import ConfigError
from saga.kafka import TopicSpec, ensure_topics
from saga.relay import Quarantine, Relay, RelayConfig
from saga.store.tables import outbox, outbox_quarantine
from saga.topics import Topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def insert_padded(engine: AsyncEngine, topic: str, seq: int, pad_bytes: int) -> str:
    """One outbox row whose payload is ``pad_bytes`` larger than usual."""
    message_id = str(uuid.uuid4())
    body = {"message_id": message_id, "seq": seq, "pad": "x" * pad_bytes}
    async with engine.begin() as conn:
        await conn.execute(
            insert(outbox),
            [
                {
                    "message_id": message_id,
                    "topic": topic,
                    "key": b"saga-a",
                    "headers": [["seq", str(seq)]],
                    "payload": json.dumps(body).encode(),
                    "owner_topic": "",
                    "shard": 0,
                    "created_at": datetime.now(UTC),
                    "published_at": None,
                }
            ],
        )
    return message_id


async def outbox_ids(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(outbox.c.message_id).order_by(outbox.c.id))
        return list(rows.scalars())


@pytest.fixture
async def outbox_db(db_engine: AsyncEngine) -> AsyncEngine:
    async with db_engine.begin() as conn:
        await conn.run_sync(outbox.metadata.create_all)
    return db_engine


async def saga_cli(*args: str, database_url: str) -> Result:
    """Run ``saga ARGS --database-url URL`` (off the event loop: the CLI runs its own)."""
    env = {"SAGA_DATABASE_URL": "sqlite+aiosqlite:///nowhere/never.db"}  # must not be used
    argv = [*args, "--database-url", database_url]
    return await asyncio.to_thread(CliRunner().invoke, cli, argv, env=env)


def quarantining(topic_prefix: str) -> RelayConfig:
    return relay_config(topic_prefix, quarantine_after_refusals=3, backoff_max_ms=200)


async def publish_quarantining(outbox_db: AsyncEngine, bootstrap: str, topic_prefix: str) -> Relay:
    """Run a quarantining relay until every row is published or quarantined; the relay."""
    topics = Topics(prefix=topic_prefix)
    async with Relay(outbox_db, bootstrap, topics, quarantining(topic_prefix)) as relay:
        relay.start()
        await wait_until_published(outbox_db, within_s=60)
    return relay


async def test_a_row_over_the_size_limit_is_quarantined_and_the_rows_behind_it_go_out(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}inventory.commands"
    await create_topic(kafka_bootstrap, topic)
    before = await insert_rows(outbox_db, topic, 3)
    big = await insert_padded(outbox_db, topic, 3, pad_bytes=2 * 1024 * 1024)
    after = await insert_rows(outbox_db, topic, 4, start=4)

    relay = await publish_quarantining(outbox_db, kafka_bootstrap, topic_prefix)
    assert relay.quarantined == 1
    assert relay.published == 7
    seen = await read_committed(kafka_bootstrap, topic, 7)
    assert_exactly_once_in_order(seen, before + after)

    [row] = await Quarantine(outbox_db).rows()
    assert row.message_id == big
    assert row.topic == topic
    assert row.attempts == 3
    assert "MessageSizeTooLargeError" in row.reason
    assert row.payload_bytes > 2 * 1024 * 1024, "the payload is kept whole"
    assert big not in await outbox_ids(outbox_db)


async def test_a_row_the_broker_refuses_is_quarantined_and_sent_after_requeue(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    small = f"{topic_prefix}small.commands"
    await ensure_topics(
        kafka_bootstrap, [TopicSpec(name=small, config={"max.message.bytes": "2048"})]
    )
    before = await insert_rows(outbox_db, small, 2)
    big = await insert_padded(outbox_db, small, 2, pad_bytes=8 * 1024)
    after = await insert_rows(outbox_db, small, 2, start=3)

    relay = await publish_quarantining(outbox_db, kafka_bootstrap, topic_prefix)
    assert relay.quarantined == 1
    assert_exactly_once_in_order(await read_committed(kafka_bootstrap, small, 4), before + after)
    listed = await saga_cli("outbox", "quarantined", "--json", database_url=database_url)
    assert listed.exit_code == 0, listed.output
    [shown] = json.loads(listed.output)
    assert shown["message_id"] == big
    assert "MessageSizeTooLargeError" in shown["reason"], "the broker's refusal"

    # The operator fixes the cause and sends the row again.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, small, {"max.message.bytes": "1048588"})]
        )
    finally:
        await admin.close()
    requeued = await saga_cli("outbox", "requeue", big, database_url=database_url)
    assert requeued.exit_code == 0, requeued.output
    assert f"requeued {big}" in requeued.output
    assert await Quarantine(outbox_db).rows() == []
    relay = await publish_quarantining(outbox_db, kafka_bootstrap, topic_prefix)
    assert relay.quarantined == 0
    seen = [s.message_id for s in await read_committed(kafka_bootstrap, small, 5)]
    assert seen == [*before, *after, big], "once each; a requeued row goes last in its lane"

    again = await saga_cli("outbox", "requeue", big, database_url=database_url)
    assert again.exit_code == 1
    assert f"not in the quarantine: {big}" in again.output


async def test_a_row_for_an_invalid_topic_is_quarantined_and_can_be_discarded(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    good = f"{topic_prefix}inventory.commands"
    await create_topic(kafka_bootstrap, good)
    bad = await insert_rows(outbox_db, f"{topic_prefix}no such topic!", 1)
    after = await insert_rows(outbox_db, good, 3, start=1)

    relay = await publish_quarantining(outbox_db, kafka_bootstrap, topic_prefix)
    assert relay.quarantined == 1
    assert_exactly_once_in_order(await read_committed(kafka_bootstrap, good, 3), after)
    [row] = await Quarantine(outbox_db).rows()
    assert row.message_id == bad[0]
    assert "not a valid topic name" in row.reason

    result = await saga_cli("outbox", "discard", bad[0], "--yes", database_url=database_url)
    assert result.exit_code == 0, result.output
    async with outbox_db.connect() as conn:
        left = await conn.execute(select(func.count()).select_from(outbox_quarantine))
        assert left.scalar_one() == 0


def test_quarantine_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="quarantine_after_refusals"):
        RelayConfig(quarantine_after_refusals=0)
    with pytest.raises(ConfigError, match="quarantine_missing_topic_after_ms"):
        RelayConfig(quarantine_missing_topic_after_ms=-1)
