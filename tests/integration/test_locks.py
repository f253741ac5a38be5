"""Per-key locks: one saga per key at a time, the others wait durably in arrival order.

Real Kafka, both databases, ``saga coordinator`` as an OS process that is SIGKILLed while
sagas wait for a key; a new process picks up where it left off.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from _processes import spawn_coordinator, stop
from click.testing import CliRunner

from saga.cli import cli
from saga.coordinator import DefinitionCache, start_saga
from saga.kafka import deployment_topics, ensure_topics
from saga.operations import SagaOperations
from saga.store import SqlStore, create_engine, upgrade
from saga.topics import Topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

DEFINITION = """\
name: transfer
version: 1
lock: account
steps:
  - name: approve
    signal: go
    timeout: 10m
"""


async def statuses(store: SqlStore, ids: Sequence[UUID]) -> list[str]:
    rows = [await store.get_saga(str(i)) for i in ids]
    return [r.status if r is not None else "missing" for r in rows]


async def until(store: SqlStore, ids: Sequence[UUID], wanted: list[str], log: Path) -> None:
    try:
        async with asyncio.timeout(60):
            while await statuses(store, ids) != wanted:  # noqa: ASYNC110 - polling the store
                await asyncio.sleep(0.1)
    except TimeoutError:
        got = await statuses(store, ids)
        tail = (await asyncio.to_thread(log.read_text))[-3000:]
        raise AssertionError(f"wanted {wanted}, got {got}\n{tail}") from None


async def test_sagas_on_one_key_run_one_at_a_time_in_arrival_order_across_a_crash(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(prefix=topic_prefix)
    definition_file = tmp_path / "transfer.yaml"
    definition_file.write_text(DEFINITION)
    engine = create_engine(database_url)
    store = SqlStore(engine)
    await upgrade(engine)
    await ensure_topics(kafka_bootstrap, deployment_topics(topics, [], partitions=3))
    await store.register_partitions(topics.coordinator_group, topics.replies, 3)
    env = {
        **os.environ,
        "SAGA_DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SAGA_TOPIC_PREFIX": topic_prefix,
        "SAGA_DEFINITIONS": str(definition_file),
        "SAGA_PARTITIONS": "3",
    }
    log = tmp_path / "coordinator.log"
    coordinator = spawn_coordinator(env, log)
    try:
        definitions = DefinitionCache(store)
        ops = SagaOperations(store, definitions, topics)
        async with asyncio.timeout(60):
            while await definitions.latest("transfer") is None:  # noqa: ASYNC110
                await asyncio.sleep(0.1)

        async def begin(account: str) -> UUID:
            started = await start_saga(
                store, definitions, topics, "transfer", {"account": account}, now=datetime.now(UTC)
            )
            return started.saga_id

        on_a = [await begin("A") for _ in range(10)]
        on_b = [await begin("B"), await begin("B")]
        running = ["running"]
        await until(store, on_a, running + ["queued"] * 9, log)
        await until(store, on_b, ["running", "queued"], log)  # other keys run meanwhile
        detail = await ops.get_saga(on_a[3])
        assert detail.lock is not None
        assert (detail.lock.key, detail.lock.holder) == ("transfer:A", str(on_a[0]))
        assert detail.lock.position == 3, "two sagas wait before it"
        shown = await asyncio.to_thread(CliRunner().invoke, cli, ["status", str(on_a[3])], env=env)
        assert shown.exit_code == 0, shown.output
        assert "queued" in shown.output
        assert "transfer:A (waiting, number 3 in line" in shown.output

        for n in range(10):
            if n == 4:  # the coordinator dies with sagas waiting; a new one goes on
                coordinator.send_signal(signal.SIGKILL)
                coordinator.wait(10)
                coordinator = spawn_coordinator(env, log)
            await ops.signal(on_a[n], "go", {}, actor="test")
            done = ["completed"] * (n + 1)
            rest = running + ["queued"] * (8 - n) if n < 9 else []
            await until(store, on_a, done + rest, log)
        await ops.signal(on_b[0], "go", {}, actor="test")
        await until(store, on_b, ["completed", "running"], log)

        # Arrival order: each saga got the key right after the one before it finished.
        granted = []
        for saga_id in on_a:
            trail = await store.audit_trail(str(saga_id))
            granted.append(next(r.recorded_at for r in trail if r.kind == "lock.acquired"))
        assert granted == sorted(granted)
        async with engine.connect() as conn:
            waiting = await conn.exec_driver_sql("SELECT count(*) FROM saga_lock_waiters")
            assert waiting.scalar_one() == 0, "every waiter was granted, none is left"
    finally:
        stop(coordinator)
        await engine.dispose()
