"""Crash points of the coordinator, with real processes.

The coordinator runs as an OS process (`saga coordinator`, relay included) and is
SIGKILLed right after a batch was committed to the database — offsets are never
committed to Kafka, so this is "after the DB commit, before any Kafka offset commit".
A restarted coordinator must finish every saga, and a read_committed consumer must see
every command message id exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _processes import spawn_coordinator, stop
from _scripted import ScriptedParticipants
from aiokafka import AIOKafkaConsumer

from contracts import Envelope
from saga.coordinator import DefinitionCache, start_saga
from saga.definition.examples.order_placement import ORDER_PLACEMENT
from saga.kafka import deployment_topics, ensure_topics
from saga.store import SqlStore, create_engine, upgrade
from saga.topics import Topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

PARTICIPANTS = ["inventory", "payments", "orders", "shipping"]
SAGAS = 20


async def _commands(bootstrap: str, topics: Topics) -> list[Envelope]:
    consumer = AIOKafkaConsumer(
        *[topics.commands(p) for p in PARTICIPANTS],
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[Envelope] = []
    try:
        idle = 0
        while idle < 4:
            batch = await consumer.getmany(timeout_ms=500)
            idle = 0 if batch else idle + 1
            got.extend(Envelope.from_bytes(r.value) for rs in batch.values() for r in rs)
    finally:
        await consumer.stop()
    return got


async def test_killed_coordinator_restarts_without_losing_or_duplicating(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(prefix=topic_prefix)
    engine = create_engine(database_url)
    store = SqlStore(engine)
    await upgrade(engine)
    definitions = DefinitionCache(store)
    await definitions.register([ORDER_PLACEMENT])
    await ensure_topics(kafka_bootstrap, deployment_topics(topics, PARTICIPANTS, partitions=3))
    await store.register_partitions(topics.coordinator_group, topics.replies, 3)
    env = {
        **os.environ,
        "SAGA_DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SAGA_TOPIC_PREFIX": topic_prefix,
        "SAGA_DEFINITIONS": "saga.definition.examples.order_placement:ORDER_PLACEMENT",
        "SAGA_PARTITIONS": "3",
        "SAGA_COORDINATOR_CRASH_AFTER_BATCHES": "3",
    }
    log = tmp_path / "coordinator.log"
    first = spawn_coordinator(env, log)
    try:
        async with ScriptedParticipants(kafka_bootstrap, topics, PARTICIPANTS, {}):
            for n in range(SAGAS):
                await start_saga(
                    store,
                    definitions,
                    topics,
                    ORDER_PLACEMENT.name,
                    {"order_id": f"o-{n}", "customer_id": "c", "lines": [], "total_cents": 1},
                    now=datetime.now(UTC),
                )
            # The fault hook kills the first process after its third committed batch.
            for _ in range(600):
                if first.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            assert first.returncode == -signal.SIGKILL, log.read_text()[-3000:]

            env.pop("SAGA_COORDINATOR_CRASH_AFTER_BATCHES")
            second = spawn_coordinator(env, log)
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 90
                while loop.time() < deadline:
                    rows, _ = await store.list_sagas(limit=SAGAS)
                    if len(rows) == SAGAS and all(r.status == "completed" for r in rows):
                        break
                    await asyncio.sleep(0.2)
                statuses = Counter(r.status for r in rows)
                assert statuses == {"completed": SAGAS}, (statuses, log.read_text()[-3000:])
            finally:
                stop(second)
        commands = await _commands(kafka_bootstrap, topics)
    finally:
        with contextlib.suppress(Exception):
            stop(first)
        await engine.dispose()
    ids = Counter(e.message_id for e in commands)
    assert [mid for mid, n in ids.items() if n > 1] == []
    # Each attempt of each step was published once (a slow start may cause retries,
    # which are new attempts with new ids, never copies of an old one).
    attempts = Counter((e.saga_id, e.step, e.attempt, e.kind) for e in commands)
    assert [k for k, n in attempts.items() if n > 1] == []
    steps = {(e.saga_id, e.step) for e in commands}
    assert len(steps) == SAGAS * 4, "every saga sent all four steps"
