"""Inbox retention against real Kafka and both databases: the topic's retention.ms decides
how long inbox ids are kept; the coordinator and participants prune older ones."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from _participant_helpers import running
from _scripted import fast_runtime_config, looping
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import Frozen
from saga.coordinator import CoordinatorRuntime, RuntimeConfig
from saga.errors import TransportError
from saga.inbox import KAFKA_DEFAULT_RETENTION, InboxPruner, inbox_retention
from saga.kafka import TopicSpec, ensure_topics, topic_retention
from saga.participant import CommandContext, Participant, ParticipantConfig
from saga.store import SqlStore, upgrade
from saga.store.tables import inbox
from saga.topics import Topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

HOUR_MS = str(60 * 60 * 1000)
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def _ids(n: int) -> list[str]:
    return [str(uuid4()) for _ in range(n)]


async def _insert_ids(engine: AsyncEngine, ids: Iterable[str], received_at: datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(inbox), [{"message_id": i, "received_at": received_at} for i in ids]
        )


async def _old_and_new(
    engine: AsyncEngine, old: tuple[int, timedelta], new: tuple[int, timedelta], now: datetime
) -> tuple[list[str], list[str]]:
    """Insert ``(count, age)`` inbox ids received that long before ``now``: old and new."""
    (old_n, old_age), (new_n, new_age) = old, new
    old_ids, new_ids = _ids(old_n), _ids(new_n)
    await _insert_ids(engine, old_ids, now - old_age)
    await _insert_ids(engine, new_ids, now - new_age)
    return old_ids, new_ids


async def _replies_kept(bootstrap: str, topic_prefix: str, retention_ms: str) -> None:
    """Create the replies topic of ``topic_prefix`` with ``retention.ms``."""
    replies = Topics(prefix=topic_prefix).replies
    await ensure_topics(bootstrap, [TopicSpec(name=replies, config={"retention.ms": retention_ms})])


async def _inbox_ids(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.execute(select(inbox.c.message_id))).scalars())


async def _wait_until_gone(engine: AsyncEngine, gone: set[str], limit_s: float = 20) -> set[str]:
    """Poll the inbox until none of ``gone`` is left; returns what is left."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        left = await _inbox_ids(engine)
        if not left & gone or asyncio.get_running_loop().time() > deadline:
            return left
        await asyncio.sleep(0.05)


def _retention_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "saga.inbox" and r.levelno == level]


# -- reading retention.ms -----------------------------------------------------------------


async def test_topic_retention_reads_retention_ms_and_minus_one_is_forever(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    hour, forever = f"{topic_prefix}hour", f"{topic_prefix}forever"
    await ensure_topics(
        kafka_bootstrap,
        [
            TopicSpec(name=hour, config={"retention.ms": HOUR_MS}),
            TopicSpec(name=forever, config={"retention.ms": "-1"}),
        ],
    )
    assert await topic_retention(kafka_bootstrap, hour) == timedelta(hours=1)
    assert await topic_retention(kafka_bootstrap, forever) is None
    with pytest.raises(TransportError, match="UnknownTopicOrPartition"):
        await topic_retention(kafka_bootstrap, f"{topic_prefix}missing")


async def test_retention_falls_back_to_kafkas_default_when_it_cannot_be_read(
    kafka_bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="saga.inbox")
    retention = await inbox_retention(kafka_bootstrap, f"{topic_prefix}missing", owner="test")
    assert retention == KAFKA_DEFAULT_RETENTION == timedelta(days=7)
    assert any(
        "assuming Kafka's default of 7 d" in m for m in _retention_records(caplog, logging.WARNING)
    )


async def test_explicit_retention_shorter_than_the_topics_warns(
    kafka_bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"{topic_prefix}hour"
    await ensure_topics(kafka_bootstrap, [TopicSpec(name=topic, config={"retention.ms": HOUR_MS})])
    caplog.set_level(logging.INFO, logger="saga.inbox")

    longer = await inbox_retention(kafka_bootstrap, topic, timedelta(hours=2), owner="test")
    assert longer == timedelta(hours=2)
    assert _retention_records(caplog, logging.WARNING) == []

    shorter = await inbox_retention(kafka_bootstrap, topic, timedelta(minutes=10), owner="test")
    assert shorter == timedelta(minutes=10)
    [warning] = _retention_records(caplog, logging.WARNING)
    assert "10 min" in warning
    assert f"less than {topic} keeps its records (1 h)" in warning
    assert "will be processed again" in warning


# -- the prune loop, driven directly ----------------------------------------------------------


async def test_pruner_deletes_only_ids_older_than_the_retention_in_batches(
    db_engine: AsyncEngine,
) -> None:
    await upgrade(db_engine)
    store = SqlStore(db_engine)
    _, new = await _old_and_new(db_engine, (25, timedelta(hours=2)), (5, timedelta(minutes=30)), T0)
    calls: list[int] = []

    async def prune(older_than: datetime, limit: int) -> int:
        deleted = await store.prune_inbox(older_than, limit)
        calls.append(deleted)
        return deleted

    pruner = InboxPruner(
        prune, timedelta(hours=1), interval=timedelta(milliseconds=20), limit=10, clock=lambda: T0
    )
    assert await pruner.prune_once() == 25
    assert calls == [10, 10, 5]  # until a batch deletes fewer than the limit
    assert await _inbox_ids(db_engine) == set(new)

    # The loop goes on pruning what ages meanwhile, until stopped.
    later = _ids(3)
    await _insert_ids(db_engine, later, T0 - timedelta(hours=1, seconds=1))
    task = asyncio.create_task(pruner.run())
    try:
        assert await _wait_until_gone(db_engine, set(later)) == set(new)
    finally:
        pruner.stop()
        await asyncio.wait_for(task, 5)
    assert pruner.pruned == 28


async def test_pruner_failures_are_logged_and_retried(
    db_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    await upgrade(db_engine)
    store = SqlStore(db_engine)
    old = _ids(3)
    await _insert_ids(db_engine, old, T0 - timedelta(days=2))
    failures = [RuntimeError("boom")]

    async def flaky(older_than: datetime, limit: int) -> int:
        if failures:
            raise failures.pop()
        return await store.prune_inbox(older_than, limit)

    pruner = InboxPruner(
        flaky, timedelta(days=1), interval=timedelta(milliseconds=20), clock=lambda: T0
    )
    task = asyncio.create_task(pruner.run())
    try:
        assert await _wait_until_gone(db_engine, set(old)) == set()
    finally:
        pruner.stop()
        await asyncio.wait_for(task, 5)
    assert any("pruning the inbox failed" in m for m in _retention_records(caplog, logging.WARNING))


# -- the coordinator runtime ------------------------------------------------------------------


def _runtime_config(
    database_url: str, bootstrap: str, prefix: str, **inbox: object
) -> RuntimeConfig:
    config = fast_runtime_config(database_url, bootstrap, Topics(prefix=prefix), partitions=1)
    return dataclasses.replace(config, inbox_prune_interval=timedelta(milliseconds=100), **inbox)


async def test_coordinator_prunes_ids_older_than_the_replies_topics_retention(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    await _replies_kept(kafka_bootstrap, topic_prefix, HOUR_MS)
    config = _runtime_config(database_url, kafka_bootstrap, topic_prefix)
    async with CoordinatorRuntime(config, []) as runtime:
        assert runtime.inbox_retention == timedelta(hours=1)
        old, new = await _old_and_new(
            runtime.engine, (30, timedelta(hours=2)), (4, timedelta(minutes=10)), datetime.now(UTC)
        )
        async with looping(runtime):
            assert await _wait_until_gone(runtime.engine, set(old)) == set(new)
            assert runtime.inbox is not None
            assert runtime.inbox.pruned == 30


async def test_coordinator_never_prunes_when_the_replies_topic_keeps_records_forever(
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="saga.inbox")
    await _replies_kept(kafka_bootstrap, topic_prefix, "-1")
    config = _runtime_config(database_url, kafka_bootstrap, topic_prefix)
    async with CoordinatorRuntime(config, []) as runtime:
        assert runtime.inbox_retention is None
        [info] = _retention_records(caplog, logging.INFO)
        assert "keeps its records forever" in info
        assert "never pruned" in info
        ancient = _ids(3)
        await _insert_ids(runtime.engine, ancient, datetime.now(UTC) - timedelta(days=400))
        async with looping(runtime):
            await asyncio.sleep(1.0)  # ten prune intervals
            assert runtime.inbox is not None
            assert runtime.inbox.retention is None
        assert await _inbox_ids(runtime.engine) == set(ancient)


async def test_coordinator_explicit_retention_shorter_than_the_topics_warns_and_is_used(
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _replies_kept(kafka_bootstrap, topic_prefix, HOUR_MS)
    config = _runtime_config(
        database_url, kafka_bootstrap, topic_prefix, inbox_retention=timedelta(minutes=5)
    )
    async with CoordinatorRuntime(config, []) as runtime:
        assert runtime.inbox_retention == timedelta(minutes=5)
        [warning] = _retention_records(caplog, logging.WARNING)
        assert warning.startswith("coordinator: inbox ids are kept for 5 min")
        assert "processed again" in warning
        old, new = await _old_and_new(
            runtime.engine, (3, timedelta(minutes=10)), (3, timedelta(minutes=1)), datetime.now(UTC)
        )
        async with looping(runtime):
            assert await _wait_until_gone(runtime.engine, set(old)) == set(new)


# -- participants -------------------------------------------------------------------------


def _participant(bootstrap: str, prefix: str, engine: AsyncEngine, **inbox: object) -> Participant:
    participant = Participant(
        ParticipantConfig(
            name="keeper",
            bootstrap_servers=bootstrap,
            topics=Topics(prefix=prefix),
            inbox_prune_interval=timedelta(milliseconds=100),
            **inbox,  # type: ignore[arg-type]
        ),
        engine,
    )

    async def handle(cmd: _Payload, ctx: CommandContext) -> None:
        return None

    participant.register("keeper.do", handle, model=_Payload)
    return participant


class _Payload(Frozen):
    pass


async def _participant_topics(bootstrap: str, prefix: str, commands_retention_ms: str) -> None:
    topics = Topics(prefix=prefix)
    await ensure_topics(
        bootstrap,
        [
            TopicSpec(name=topics.replies),
            TopicSpec(name=topics.dlq),
            TopicSpec(
                name=topics.commands("keeper"), config={"retention.ms": commands_retention_ms}
            ),
        ],
    )


async def test_participant_prunes_ids_older_than_its_commands_topics_retention(
    db_engine: AsyncEngine, kafka_bootstrap: str, topic_prefix: str
) -> None:
    await _participant_topics(kafka_bootstrap, topic_prefix, HOUR_MS)
    participant = _participant(kafka_bootstrap, topic_prefix, db_engine)
    async with participant:
        assert participant.inbox_retention == timedelta(hours=1)
        old, new = await _old_and_new(
            db_engine, (12, timedelta(hours=3)), (4, timedelta(minutes=20)), datetime.now(UTC)
        )
        task = asyncio.create_task(participant.run())
        try:
            assert await _wait_until_gone(db_engine, set(old)) == set(new)
            assert participant.inbox_pruner is not None
            assert participant.inbox_pruner.pruned == 12
        finally:
            participant.stop()
            await asyncio.wait_for(task, 30)
    assert participant.inbox_pruner is None


async def test_participant_explicit_retention_shorter_than_the_topics_warns(
    db_engine: AsyncEngine,
    kafka_bootstrap: str,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _participant_topics(kafka_bootstrap, topic_prefix, HOUR_MS)
    participant = _participant(
        kafka_bootstrap, topic_prefix, db_engine, inbox_retention=timedelta(minutes=15)
    )
    async with running(participant):
        assert participant.inbox_retention == timedelta(minutes=15)
        [warning] = _retention_records(caplog, logging.WARNING)
        assert warning.startswith("keeper: inbox ids are kept for 15 min")
        assert f"{topic_prefix}keeper.commands keeps its records (1 h)" in warning
