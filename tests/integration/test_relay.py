"""The outbox relay publishes every outbox row in exactly one committed Kafka transaction.

Real Kafka, real SQLite and PostgreSQL. Crash recovery runs `saga relay` as an OS process
that SIGKILLs itself between the Kafka commit and the database mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from saga.errors import ConfigError, ProducerFenced, TransportError
from saga.kafka import TopicSpec, close_quietly, committed_consumer, ensure_topics
from saga.relay import (
    OutboxTable,
    Relay,
    RelayConfig,
    State,
    decode_checkpoint,
    read_last_checkpoint,
)
from saga.store import as_utc, outbox_channel, tables
from saga.store.tables import outbox
from saga.topics import Topics

pytestmark = pytest.mark.kafka

KEYS = [b"saga-a", b"saga-b", b"saga-c"]


@dataclass(frozen=True)
class Seen:
    topic: str
    partition: int
    key: bytes | None
    message_id: str
    seq: int
    headers: dict[str, bytes]


async def create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(tables.metadata.create_all)


async def create_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    await ensure_topics(bootstrap, [TopicSpec(name=name, partitions=partitions)])


async def insert_rows(
    engine: AsyncEngine,
    topic: str,
    count: int,
    *,
    shard: int = 0,
    start: int = 0,
    published_at: datetime | None = None,
    owner_topic: str = "",
) -> list[str]:
    """Insert ``count`` outbox rows; the payload carries the message id and a sequence."""
    rows = []
    for seq in range(start, start + count):
        message_id = str(uuid.uuid4())
        rows.append(
            {
                "message_id": message_id,
                "topic": topic,
                "key": KEYS[seq % len(KEYS)],
                "headers": [["traceparent", f"00-{seq:032x}-{seq:016x}-01"], ["seq", str(seq)]],
                "payload": json.dumps({"message_id": message_id, "seq": seq}).encode(),
                "owner_topic": owner_topic,
                "shard": shard,
                "created_at": datetime.now(UTC),
                "published_at": published_at,
            }
        )
    async with engine.begin() as conn:
        await conn.execute(insert(outbox), rows)
    return [r["message_id"] for r in rows]


async def unpublished_count(engine: AsyncEngine, shard: int | None = None) -> int:
    query = select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
    if shard is not None:
        query = query.where(outbox.c.shard == shard)
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def wait_until_published(engine: AsyncEngine, shard: int = 0, within_s: float = 30) -> None:
    async with asyncio.timeout(within_s):
        # Polling the database is the point: it is what the relay changes.
        while await unpublished_count(engine, shard):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def read_committed(
    bootstrap: str, topic: str, expect: int, *, quiet_s: float = 1.0, within_s: float = 20
) -> list[Seen]:
    """Read ``topic`` with a read_committed consumer until ``expect`` records arrived and
    nothing more came for ``quiet_s`` (so duplicates would show up)."""
    return await _read(committed_consumer(bootstrap, [topic]), expect, quiet_s, within_s)


async def read_uncommitted(
    bootstrap: str, topic: str, expect: int, *, quiet_s: float = 1.0, within_s: float = 20
) -> list[Seen]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_uncommitted",
    )
    return await _read(consumer, expect, quiet_s, within_s)


async def _read(
    consumer: AIOKafkaConsumer, expect: int, quiet_s: float, within_s: float
) -> list[Seen]:
    seen: list[Seen] = []
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        last_new = loop.time()
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    body = json.loads(r.value)
                    seen.append(
                        Seen(
                            topic=r.topic,
                            partition=r.partition,
                            key=r.key,
                            message_id=body["message_id"],
                            seq=body["seq"],
                            headers=dict(r.headers),
                        )
                    )
                    last_new = loop.time()
            if len(seen) >= expect and loop.time() - last_new >= quiet_s:
                break
    finally:
        await consumer.stop()
    return seen


def assert_exactly_once_in_order(seen: list[Seen], message_ids: list[str]) -> None:
    """Every message id exactly once, and per key in the order the rows were written."""
    got = [s.message_id for s in seen]
    assert sorted(got) == sorted(message_ids), "each outbox row must appear exactly once"
    assert len(got) == len(set(got))
    for key in KEYS:
        seqs = [s.seq for s in seen if s.key == key]
        assert seqs == sorted(seqs), f"records of key {key!r} out of order: {seqs}"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def outbox_db(db_engine: AsyncEngine) -> AsyncEngine:
    await create_tables(db_engine)
    return db_engine


@pytest.fixture
async def topic(kafka_bootstrap: str, topic_prefix: str) -> str:
    name = f"{topic_prefix}inventory.commands"
    await create_topic(kafka_bootstrap, name)
    return name


def relay_config(topic_prefix: str, **overrides: object) -> RelayConfig:
    options: dict[str, object] = {
        "relay_id": f"{topic_prefix}relay-0",
        "batch_size": 10,
        "linger_ms": 0,
        "poll_interval_ms": 20,
        "backoff_initial_ms": 50,
        "backoff_max_ms": 500,
    }
    options.update(overrides)
    return RelayConfig(**options)  # type: ignore[arg-type]


sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
postgres_only = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


# --------------------------------------------------------------------------- a) publish


@pytest.mark.postgres
async def test_publishes_rows_in_id_order_exactly_once_and_marks_them(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, topic: str
) -> None:
    ids = await insert_rows(outbox_db, topic, 25)
    other_shard = await insert_rows(outbox_db, topic, 3, shard=1, start=100)
    topics = Topics(prefix=topic_prefix)

    async with Relay(outbox_db, kafka_bootstrap, topics, relay_config(topic_prefix)) as relay:
        relay.start()
        await wait_until_published(outbox_db)
        # Rows written while the relay runs are published too.
        ids += await insert_rows(outbox_db, topic, 7, start=25)
        await wait_until_published(outbox_db)

    assert relay.state is State.CLOSED
    assert relay.published == 32
    seen = await read_committed(kafka_bootstrap, topic, 32)
    assert_exactly_once_in_order(seen, ids)
    assert not {s.message_id for s in seen} & set(other_shard), "shard 1 is not ours"
    assert await unpublished_count(outbox_db, shard=1) == 3
    assert seen[0].headers["traceparent"].startswith(b"00-"), "headers travel as bytes"
    assert {s.headers["seq"] for s in seen} == {str(s.seq).encode() for s in seen}

    # The last committed checkpoint names the last batch.
    checkpoints = committed_consumer(kafka_bootstrap, [topics.checkpoints])
    await checkpoints.start()
    values: list[bytes] = []
    try:
        while batches := await checkpoints.getmany(timeout_ms=2000):
            values += [r.value for records in batches.values() for r in records]
    finally:
        await checkpoints.stop()
    assert values, "every transaction writes a checkpoint"
    last = decode_checkpoint(values[-1])
    assert last.message_ids, "the checkpoint names rows by message id"
    assert set(last.message_ids) <= set(ids)
    assert last.message_ids == [i for i in ids if i in set(last.message_ids)], "in id order"
    assert last.message_ids[-1] == ids[-1]
    assert json.loads(values[-1])["max_id"] == 35, "25 + 3 (other shard) + 7 rows"


@pytest.mark.postgres
async def test_rows_that_reuse_the_ids_of_a_checkpointed_batch_are_still_published(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, topic: str
) -> None:
    """Outbox ids are reused: SQLite hands out rowids 1, 2, ... again once pruning has
    emptied the table, and a recreated or restored database starts its ids again. The
    relay's last checkpoint still names the earlier batch; the new rows with the same
    ids must be sent, not taken for published."""
    topics = Topics(prefix=topic_prefix)
    # Marked at once, so that pruning right after the batch finds its rows.
    config = relay_config(topic_prefix, prune_after=timedelta(0), mark_after_ms=0)
    first = await insert_rows(outbox_db, topic, 8)
    async with Relay(outbox_db, kafka_bootstrap, topics, config) as relay:
        assert await relay.publish_once() == 8
        assert await relay.prune_once() == 8
    async with outbox_db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(outbox))).scalar_one() == 0
    if outbox_db.dialect.name == "postgresql":
        # A database recreated (or restored) while Kafka keeps the checkpoint.
        async with outbox_db.begin() as conn:
            await conn.execute(text("TRUNCATE saga_outbox RESTART IDENTITY"))
    second = await insert_rows(outbox_db, topic, 8, start=8)
    async with outbox_db.connect() as conn:
        reused = (await conn.execute(select(outbox.c.id).order_by(outbox.c.id))).scalars().all()
    assert reused == list(range(1, 9)), "the new rows got the ids of the checkpointed batch"

    async with Relay(outbox_db, kafka_bootstrap, topics, config) as relay:
        relay.start()
        await wait_until_published(outbox_db)
    assert relay.published == 8, "every new row was sent, none taken for published"
    seen = await read_committed(kafka_bootstrap, topic, 16)
    assert_exactly_once_in_order(seen, first + second)


@postgres_only
@pytest.mark.postgres
async def test_postgres_notify_wakes_the_relay_without_polling(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, topic: str
) -> None:
    config = relay_config(topic_prefix, fallback_poll_ms=600_000)
    async with Relay(outbox_db, kafka_bootstrap, Topics(prefix=topic_prefix), config) as relay:
        relay.start()
        await asyncio.sleep(1.0)  # connected, listening, and waiting for a wake-up
        ids = await insert_rows(outbox_db, topic, 5)
        await asyncio.sleep(1.0)
        assert await unpublished_count(outbox_db) == 5, "nothing but NOTIFY may wake it"
        channel = await outbox_channel(outbox_db, config.owner_topic)
        async with outbox_db.begin() as conn:
            await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channel})
        await wait_until_published(outbox_db, within_s=5)
    seen = await read_committed(kafka_bootstrap, topic, 5)
    assert_exactly_once_in_order(seen, ids)


# --------------------------------------------------------------------------- b) crash


async def _run_relay_process(
    database_url: str, bootstrap: str, topic_prefix: str, *, crash: bool
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "SAGA_DATABASE_URL": database_url,
        "SAGA_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SAGA_TOPIC_PREFIX": topic_prefix,
        "SAGA_LOG_LEVEL": "INFO",
    }
    env.pop("SAGA_RELAY_CRASH_AFTER_COMMIT", None)
    if crash:
        env["SAGA_RELAY_CRASH_AFTER_COMMIT"] = "1"
    saga = Path(sys.executable).with_name("saga")
    return await asyncio.create_subprocess_exec(
        str(saga),
        "relay",
        "--batch-size",
        "10",
        "--linger-ms",
        "0",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.slow
@pytest.mark.postgres
async def test_relay_killed_between_kafka_commit_and_db_mark_recovers_from_checkpoint(
    outbox_db: AsyncEngine, database_url: str, kafka_bootstrap: str, topic_prefix: str, topic: str
) -> None:
    # `saga relay` publishes the lanes of the replies partitions it is assigned (one here).
    replies = Topics(prefix=topic_prefix).replies
    await create_topic(kafka_bootstrap, replies, partitions=1)
    ids = await insert_rows(outbox_db, topic, 25, owner_topic=replies)

    crashing = await _run_relay_process(database_url, kafka_bootstrap, topic_prefix, crash=True)
    _, err = await asyncio.wait_for(crashing.communicate(), 60)
    assert crashing.returncode == -signal.SIGKILL, err.decode()[-2000:]
    # The first batch is committed in Kafka but the process died before marking it.
    assert await unpublished_count(outbox_db) == 25
    first = await read_committed(kafka_bootstrap, topic, 10, quiet_s=0.5)
    assert sorted(s.seq for s in first) == list(range(10))

    relay = await _run_relay_process(database_url, kafka_bootstrap, topic_prefix, crash=False)
    try:
        await wait_until_published(outbox_db, within_s=60)
    finally:
        relay.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(relay.communicate(), 60)
    log = err.decode()
    assert relay.returncode == 0, log[-2000:]
    assert "recovered its last checkpoint: 10 messages are published" in log

    seen = await read_committed(kafka_bootstrap, topic, 25)
    assert_exactly_once_in_order(seen, ids)


async def test_a_relay_lost_with_batches_unmarked_leaves_them_all_in_its_checkpoint(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, topic: str
) -> None:
    # Marks wait (mark_after_ms): three batches go out and none is marked when the
    # relay is lost. Its last checkpoint names all three, so its successor marks them
    # and sends only the rows that never went out.
    topics = Topics(prefix=topic_prefix)
    config = relay_config(topic_prefix, batch_size=10, mark_after_ms=600_000)
    lost = Relay(outbox_db, kafka_bootstrap, topics, config)
    await lost.__aenter__()
    try:
        ids: list[str] = []
        for batch in range(3):
            ids += await insert_rows(outbox_db, topic, 3, start=3 * batch)
            assert await lost.publish_once() == 3, "the rows waiting for a mark are left out"
        assert await unpublished_count(outbox_db) == 9, "no batch is marked yet"
        lost._unmarked.clear()  # what a SIGKILL takes with it: nothing marks them on close
        ids += await insert_rows(outbox_db, topic, 2, start=9)

        async with Relay(outbox_db, kafka_bootstrap, topics, config) as successor:
            assert await successor.publish_once() == 2, "only the two rows never sent"
            assert await unpublished_count(outbox_db) == 2, "9 marked from the checkpoint"
        assert await unpublished_count(outbox_db) == 0, "the last batch is marked on close"
    finally:
        await lost.__aexit__(None, None, None)
    seen = await read_committed(kafka_bootstrap, topic, 11)
    assert_exactly_once_in_order(seen, ids)


async def test_an_idle_relay_marks_what_it_published_within_mark_after_ms(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, topic: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    ids = await insert_rows(outbox_db, topic, 6)
    config = relay_config(topic_prefix, mark_after_ms=300, fallback_poll_ms=600_000)
    async with Relay(outbox_db, kafka_bootstrap, topics, config) as relay:
        relay.start()
        async with asyncio.timeout(20):
            while relay.published < 6:  # noqa: ASYNC110 (the relay's own counter)
                await asyncio.sleep(0.01)
        published = time.monotonic()
        assert await unpublished_count(outbox_db) == 6, "marked only after mark_after_ms"
        await wait_until_published(outbox_db, within_s=10)
        waited = time.monotonic() - published
        assert relay.published == 6, "the rows waiting for their mark are not sent again"
    assert 0.1 < waited < 5, waited
    seen = await read_committed(kafka_bootstrap, topic, 6)
    assert_exactly_once_in_order(seen, ids)


# --------------------------------------------------------------------------- c) zombies


@sqlite_only
async def test_a_fenced_relay_stops_and_its_writes_never_become_visible(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, topic: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    in_transaction = asyncio.Event()
    release = asyncio.Event()

    async def pause_before_commit() -> None:
        in_transaction.set()
        await release.wait()

    ids = await insert_rows(outbox_db, topic, 10)
    config = relay_config(topic_prefix)
    async with Relay(
        outbox_db, kafka_bootstrap, topics, config, before_commit=pause_before_commit
    ) as zombie:
        zombie_batch = asyncio.create_task(zombie.publish_once())
        await in_transaction.wait()  # the zombie's records are in the log, uncommitted

        async with Relay(outbox_db, kafka_bootstrap, topics, config) as successor:
            assert await successor.publish_once() == 10  # fences the zombie first
            release.set()
            with pytest.raises(ProducerFenced):
                await zombie_batch
            ids += await insert_rows(outbox_db, topic, 5, start=10)
            assert await successor.publish_once() == 5
        # A fenced relay's loop stops with ProducerFenced instead of retrying.
        with pytest.raises(ProducerFenced):
            await zombie.run_until_stopped()

    seen = await read_committed(kafka_bootstrap, topic, 15)
    assert_exactly_once_in_order(seen, ids)
    everything = await read_uncommitted(kafka_bootstrap, topic, 25)
    assert len(everything) == 25, "the zombie's aborted batch reached the log, unseen"


# --------------------------------------------------------------------------- d) at least once


@sqlite_only
async def test_at_least_once_mode_publishes_without_checkpoints(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, topic: str
) -> None:
    ids = await insert_rows(outbox_db, topic, 23)
    topics = Topics(prefix=topic_prefix)
    config = relay_config(topic_prefix, mode="at_least_once")
    async with Relay(outbox_db, kafka_bootstrap, topics, config) as relay:
        assert [await relay.publish_once() for _ in range(4)] == [10, 10, 3, 0]
    assert await unpublished_count(outbox_db) == 0
    seen = await read_committed(kafka_bootstrap, topic, 23)
    assert_exactly_once_in_order(seen, ids)
    admin_check = committed_consumer(kafka_bootstrap)
    await admin_check.start()
    try:
        assert topics.checkpoints not in await admin_check.topics()
    finally:
        await admin_check.stop()


# --------------------------------------------------------------------------- e) pruning


async def test_pruning_deletes_only_old_published_rows_of_the_shard(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str
) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    old = now - timedelta(hours=3)
    recent = now - timedelta(minutes=30)
    await insert_rows(outbox_db, "t", 5, published_at=old)
    keep = await insert_rows(outbox_db, "t", 2, start=5, published_at=recent)
    keep += await insert_rows(outbox_db, "t", 3, start=7)  # unpublished
    keep += await insert_rows(outbox_db, "t", 2, start=10, shard=1, published_at=old)

    config = relay_config(topic_prefix, prune_after=timedelta(hours=1), prune_batch_size=2)
    async with Relay(
        outbox_db, kafka_bootstrap, Topics(prefix=topic_prefix), config, clock=lambda: now
    ) as relay:
        assert await relay.prune_once() == 5  # in three statements of at most two rows
        assert await relay.prune_once() == 0

    async with outbox_db.connect() as conn:
        left = (await conn.execute(select(outbox.c.message_id))).scalars().all()
    assert sorted(left) == sorted(keep)


async def test_the_outbox_table_reads_its_lane_in_order_and_marks_rows_once(
    outbox_db: AsyncEngine,
) -> None:
    # More rows than one IN list of SQLite holds, and a second lane that must stay apart.
    first = datetime(2030, 1, 1, tzinfo=UTC)
    later = first + timedelta(hours=1)
    mine = await insert_rows(outbox_db, "t", 1_200, shard=2, owner_topic="replies")
    others = await insert_rows(outbox_db, "t", 3, shard=1, owner_topic="replies")
    lane = OutboxTable(outbox_db, shard=2, owner_topic="replies")

    rows = await lane.fetch_unpublished(limit=1_100)
    assert [r.message_id for r in rows] == mine[:1_100]
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    assert rows[0].headers == [("traceparent", f"00-{0:032x}-{0:016x}-01".encode()), ("seq", b"0")]

    assert await lane.mark_published([r.id for r in rows], first) == 1_100
    rest = await lane.fetch_unpublished(limit=1_100)
    assert [r.message_id for r in rest] == mine[1_100:]
    # Marking again (recovery by message id) finds the rows and keeps their first time.
    assert await lane.mark_published_messages(mine, later) == 1_200
    assert await lane.fetch_unpublished(limit=10) == []
    async with outbox_db.connect() as conn:
        times = dict((await conn.execute(select(outbox.c.message_id, outbox.c.published_at))).all())
    assert {as_utc(times[m]) for m in mine[:1_100]} == {first}
    assert {as_utc(times[m]) for m in mine[1_100:]} == {later}
    assert {times[m] for m in others} == {None}, "the other lane is untouched"
    assert await lane.mark_published([], later) == 0


async def test_the_outbox_table_marks_a_batch_and_reads_the_next_in_one_call(
    outbox_db: AsyncEngine,
) -> None:
    # What a busy relay does: the mark of the batch it sent goes with the next read.
    now = datetime(2030, 1, 1, tzinfo=UTC)
    mine = await insert_rows(outbox_db, "t", 7, shard=2, owner_topic="replies")
    others = await insert_rows(outbox_db, "t", 2, shard=1, owner_topic="replies")
    lane = OutboxTable(outbox_db, shard=2, owner_topic="replies")

    first = await lane.fetch_unpublished(limit=3)
    second = await lane.mark_and_fetch([r.id for r in first], now, limit=3)
    assert [r.message_id for r in second] == mine[3:6], "the marked rows are not read again"
    third = await lane.mark_and_fetch([r.id for r in second], now, limit=3)
    assert [r.message_id for r in third] == mine[6:]
    assert await lane.mark_and_fetch([r.id for r in third], now, limit=3) == []
    assert await lane.mark_and_fetch([], now, limit=3) == []
    async with outbox_db.connect() as conn:
        times = dict((await conn.execute(select(outbox.c.message_id, outbox.c.published_at))).all())
    assert {as_utc(times[m]) for m in mine} == {now}
    assert {times[m] for m in others} == {None}, "the other lane is untouched"


async def test_a_full_batch_is_marked_with_the_next_read_or_when_the_relay_closes(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, topic: str
) -> None:
    ids = await insert_rows(outbox_db, topic, 15)
    topics = Topics(prefix=topic_prefix)
    config = relay_config(topic_prefix, batch_size=5)
    async with Relay(outbox_db, kafka_bootstrap, topics, config) as relay:
        assert await relay.publish_once() == 5
        # A full batch: more rows wait, so its mark goes with the next read.
        assert await unpublished_count(outbox_db) == 15
        assert await relay.publish_once() == 5
        assert await unpublished_count(outbox_db) == 10, "the first batch is marked now"
        assert await relay.publish_once() == 5
    # Closing marks the last batch, whose next read never came.
    assert await unpublished_count(outbox_db) == 0
    seen = await read_committed(kafka_bootstrap, topic, 15)
    assert_exactly_once_in_order(seen, ids)


# --------------------------------------------------------------------------- errors, lifecycle


@sqlite_only
async def test_unreachable_broker_is_retried_with_backoff_and_stop_still_works(
    outbox_db: AsyncEngine, topic_prefix: str
) -> None:
    await insert_rows(outbox_db, "t", 3)
    config = relay_config(topic_prefix, connect_timeout_ms=2_000)
    relay = Relay(outbox_db, "127.0.0.1:9", Topics(prefix=topic_prefix), config)
    async with relay:
        relay.start()
        await asyncio.sleep(1.5)
        assert relay.state is State.RUNNING, "a Kafka outage must not stop the relay"
    assert relay.state is State.CLOSED
    assert await unpublished_count(outbox_db) == 3


async def test_a_checkpoint_read_that_fails_at_once_raises_a_transport_error(
    kafka_bootstrap: str,
) -> None:
    # The consumer is stopped right after it started. aiokafka then raised its own
    # CancelledError from stop(), which ended the relay's task without a word.
    with pytest.raises(TransportError, match="no partitions"):
        await read_last_checkpoint(kafka_bootstrap, "no-such-topic", [], "relay")


async def test_close_quietly_closes_a_consumer_stopped_right_after_it_started(
    kafka_bootstrap: str,
) -> None:
    consumer = committed_consumer(kafka_bootstrap)
    await consumer.start()
    await close_quietly(consumer)  # raised CancelledError and left sockets open
    await close_quietly(consumer)  # and closing twice is harmless


async def test_close_quietly_still_lets_the_caller_be_cancelled(kafka_bootstrap: str) -> None:
    consumer = committed_consumer(kafka_bootstrap)
    await consumer.start()
    task = asyncio.create_task(close_quietly(consumer))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await close_quietly(consumer)


@pytest.mark.postgres
async def test_unreachable_database_is_retried_and_stop_still_works(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    from saga.store import create_engine

    engine = create_engine("postgresql+asyncpg://saga@127.0.0.1:1/saga")
    config = relay_config(topic_prefix)
    try:
        relay = Relay(engine, kafka_bootstrap, Topics(prefix=topic_prefix), config)
        async with relay:
            relay.start()
            await asyncio.sleep(1.5)
            assert relay.state is State.RUNNING, "a database outage must not stop the relay"
            assert relay.published == 0
        assert relay.state is State.CLOSED
    finally:
        await engine.dispose()


@sqlite_only
async def test_rows_committed_but_not_marked_are_marked_before_the_next_batch(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, topic: str
) -> None:
    ids = await insert_rows(outbox_db, topic, 12)
    topics = Topics(prefix=topic_prefix)
    async with Relay(outbox_db, kafka_bootstrap, topics, relay_config(topic_prefix)) as relay:
        real_mark = relay._outbox.mark_published
        calls = 0

        async def failing_mark(batch: list[int], now: datetime) -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                from saga.errors import StoreUnavailable

                raise StoreUnavailable("database is down")
            return await real_mark(batch, now)

        relay._outbox.mark_published = failing_mark  # type: ignore[method-assign]
        relay.start()
        await wait_until_published(outbox_db)
    seen = await read_committed(kafka_bootstrap, topic, 12)
    assert_exactly_once_in_order(seen, ids)


async def test_lifecycle_errors_are_clear(db_engine: AsyncEngine, topic_prefix: str) -> None:
    relay = Relay(db_engine, "127.0.0.1:9", Topics(prefix=topic_prefix), relay_config(topic_prefix))
    with pytest.raises(RuntimeError, match="open the relay first"):
        await relay.publish_once()
    async with relay:
        with pytest.raises(RuntimeError, match="cannot open a relay that is running"):
            await relay.__aenter__()
    with pytest.raises(RuntimeError, match="closed"):
        await relay.publish_once()
    with pytest.raises(RuntimeError, match="cannot open a relay that is closed"):
        await relay.__aenter__()


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch_size", 0), ("mode", "twice"), ("linger_ms", -1), ("shard", -1)],
)
def test_relay_config_is_validated_at_construction(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        RelayConfig(**{field: value})  # type: ignore[arg-type]


def test_the_relay_id_derives_from_the_lane_and_so_from_the_topic_prefix() -> None:
    lane = RelayConfig(owner_topic="prod.saga.replies", shard=4)
    assert lane.effective_relay_id == "prod.saga.replies.relay.4"
    assert RelayConfig(relay_id="mine").effective_relay_id == "mine"


# --------------------------------------------------------------------------- saga admin topics


def test_admin_topics_creates_every_topic_once_with_a_compacted_checkpoint_topic(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    from click.testing import CliRunner

    from saga.cli import cli

    env = {
        "SAGA_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SAGA_TOPIC_PREFIX": topic_prefix,
        "SAGA_PARTITIONS": "2",
    }
    definition = (
        Path(__file__).resolve().parents[2] / "saga/definition/examples/order_placement.yaml"
    )
    args = ["admin", "topics", "--participant", "audit", "--definitions", str(definition)]
    first = CliRunner().invoke(cli, args, env=env)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, args, env=env)
    assert again.exit_code == 0, again.output

    topics = Topics(prefix=topic_prefix)
    expected = {
        topics.replies,
        topics.events,
        topics.dlq,
        topics.checkpoints,
        topics.fences,
        topics.commands("audit"),
        topics.commands("inventory"),  # from the definition file
    }
    created = {line.split()[1] for line in first.output.splitlines() if line.startswith("created")}
    assert expected <= created
    assert f"created  {topics.fences} (partitions=1)" in first.output
    topic_lines = [
        line for line in again.output.splitlines() if line.startswith(("created", "exists"))
    ]
    assert topic_lines
    assert all(line.startswith("exists") for line in topic_lines)
    asyncio.run(_assert_compacted(kafka_bootstrap, topics.checkpoints))


async def _assert_compacted(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    entries = {entry[0]: entry[1] for entry in response.resources[0][4]}
    assert entries["cleanup.policy"] == "compact"


@postgres_only
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_frozen_broker_does_not_freeze_the_relay(
    outbox_db: AsyncEngine, topic_prefix: str, tmp_path: Path
) -> None:
    from saga.chaos import DedicatedBroker

    broker = DedicatedBroker.on_free_ports(tmp_path / "kafka")
    await broker.start()
    try:
        bootstrap = broker.bootstrap_servers
        name = f"{topic_prefix}inventory.commands"
        await create_topic(bootstrap, name)
        config = relay_config(topic_prefix, publish_timeout_ms=2_000, connect_timeout_ms=2_000)
        first = await insert_rows(outbox_db, name, 3)
        async with Relay(outbox_db, bootstrap, Topics(prefix=topic_prefix), config) as relay:
            assert await relay.publish_once() == 3
            second = await insert_rows(outbox_db, name, 3, start=3)
            pid = broker.pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)  # frozen: connections stay open, nothing answers
            try:
                # The relay gives up after publish_timeout_ms instead of waiting for ever.
                with pytest.raises(TransportError, match="did not finish"):
                    await asyncio.wait_for(relay.publish_once(), 15)
            finally:
                os.kill(pid, signal.SIGCONT)
            async with asyncio.timeout(90):
                while await unpublished_count(outbox_db):
                    with contextlib.suppress(TransportError):
                        await relay.publish_once()
                    await asyncio.sleep(0.1)
        # The batch that was given up went out exactly once after the broker came back.
        assert_exactly_once_in_order(await read_committed(bootstrap, name, 6), first + second)
    finally:
        await broker.stop()


def test_admin_topics_registers_the_replies_partitions_so_sagas_can_start_at_once(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from saga.cli import cli
    from saga.store import SqlStore, create_engine

    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    env = {
        "SAGA_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SAGA_TOPIC_PREFIX": topic_prefix,
        "SAGA_PARTITIONS": "5",
        "SAGA_DATABASE_URL": url,
    }
    assert CliRunner().invoke(cli, ["db", "upgrade"], env=env).exit_code == 0
    result = CliRunner().invoke(cli, ["admin", "topics"], env=env)
    assert result.exit_code == 0, result.output
    assert f"registered 5 partitions of {topic_prefix}saga.replies" in result.output

    async def count() -> int | None:
        engine = create_engine(url)
        try:
            return await SqlStore(engine).partition_count(f"{topic_prefix}saga.replies")
        finally:
            await engine.dispose()

    assert asyncio.run(count()) == 5
