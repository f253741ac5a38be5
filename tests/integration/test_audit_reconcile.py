"""The independent auditor (faust-streaming, real Kafka) and `saga audit reconcile`.

One end-to-end run per backend: a coordinator runtime with scripted participants runs
sagas to completion and to compensation; the auditor consumes the events topic and
`saga audit reconcile` (the real CLI, in a subprocess) finds no discrepancy. Then a
second auditor is fed a filtered copy of the events topic that lacks one saga's
`saga.completed` event, and reconcile reports exactly that saga.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import UUID

import aiohttp
import pytest
from _scripted import Reply, ScriptedParticipants, booking, fast_runtime_config, looping
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts import Envelope
from saga.audit import auditor_view, reconcile_database
from saga.chaos import free_port
from saga.coordinator import CoordinatorRuntime, start_saga
from saga.definition import SagaBuilder, SagaDefinition, pivot
from saga.kafka import TopicSpec, ensure_topics
from saga.topics import Topics
from services.audit import Auditor, AuditorConfig

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

PARTITIONS = 2
PARTICIPANTS = ["hotels", "payments"]


def definition() -> SagaDefinition:
    return (
        SagaBuilder("stay", version=1)
        .add(
            booking("hotel", "hotels", timeout_ms=10_000),
            pivot("charge", participant="payments", command="payment.charge", timeout_ms=10_000),
        )
        .build()
    )


async def run_sagas(
    database_url: str, bootstrap: str, topics: Topics, declined: set[UUID], n: int
) -> list[UUID]:
    """Run ``n`` sagas to their end; those in ``declined`` get their payment declined."""

    def charge(env: Envelope) -> Reply:
        return Reply(ok=False, code="card.declined") if env.saga_id in declined else Reply()

    config = fast_runtime_config(database_url, bootstrap, topics, partitions=PARTITIONS)
    ids = sorted(declined) + [UUID(int=i + 1) for i in range(n - len(declined))]
    async with (
        CoordinatorRuntime(config, [definition()]) as runtime,
        ScriptedParticipants(bootstrap, topics, PARTICIPANTS, {"payment.charge": charge}),
        looping(runtime),
    ):
        for sid in ids:
            await start_saga(
                runtime.store, runtime.definitions, topics, "stay", {}, now=datetime.now(UTC),
                saga_id=sid,
            )  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 45
        while loop.time() < deadline:
            rows = [await runtime.store.get_saga(str(s)) for s in ids]
            done = all(r is not None and r.status in {"completed", "compensated"} for r in rows)
            if done and await runtime.store.outbox_backlog() == 0:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the sagas did not finish in time")
    return ids


async def copy_events_without(
    bootstrap: str, source: str, target: str, drop_saga: UUID, drop_type: str
) -> int:
    """Copy every committed event of ``source`` to ``target`` except one; how many copied."""
    await ensure_topics(bootstrap, [TopicSpec(name=target, partitions=PARTITIONS)])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    copied = dropped = 0
    try:
        tps = [TopicPartition(source, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for r in records:
                    env = Envelope.from_bytes(r.value)
                    if env.saga_id == drop_saga and env.type == drop_type:
                        dropped += 1
                        continue
                    await producer.send_and_wait(target, r.value, key=r.key, partition=tp.partition)
                    copied += 1
    finally:
        await producer.stop()
        await consumer.stop()
    assert dropped == 1
    return copied


@contextlib.asynccontextmanager
async def auditing(
    bootstrap: str, topics: Topics, *, app_id: str, source: str = ""
) -> AsyncIterator[Auditor]:
    config = AuditorConfig(
        bootstrap_servers=bootstrap,
        topics=topics,
        app_id=app_id,
        source_topic=source,
        web_port=free_port(),
    )
    async with Auditor(config) as auditor:
        yield auditor


async def wait_seen(url: str, last_events: dict[UUID, str], limit_s: float = 45) -> None:
    """Until the auditor's last event of each saga is the one expected."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    seen: dict[UUID, str | None] = {}
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            for sid in last_events:
                async with session.get(f"{url}/sagas/{sid}") as r:
                    seen[sid] = (await r.json())["last_event"] if r.status == 200 else None
            if seen == last_events:
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"the auditor saw {seen}, expected {last_events}")


async def outcome_totals(url: str, expected: dict[str, int], limit_s: float = 30) -> None:
    """Until the windowed counts of ``stay`` outcomes add up to ``expected``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    totals: dict[str, int] = {}
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            async with session.get(f"{url}/counts") as r:
                body = await r.json()
            totals = {}
            for row in body["counts"]:
                assert row["saga_type"] == "stay"
                assert row["window_start"] < row["window_end"]
                totals[row["outcome"]] = totals.get(row["outcome"], 0) + row["count"]
            if totals == expected:
                assert body["window_seconds"] == 60
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"outcome counts {totals}, expected {expected}")


async def saga_cli(database_url: str, *args: str) -> tuple[int, str]:
    """Run the real `saga` command in a subprocess (CliRunner cannot nest event loops)."""
    env = {**os.environ, "SAGA_DATABASE_URL": database_url, "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "saga.cli", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_reconcile_agrees_after_a_run_and_names_the_saga_whose_event_was_lost(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    declined = {UUID(int=100)}
    ids = await run_sagas(database_url, kafka_bootstrap, topics, declined, n=4)
    completed = [s for s in ids if s not in declined]

    # 1. The auditor on the real events topic agrees with the database.
    final = {s: "saga.compensated" if s in declined else "saga.completed" for s in ids}
    async with auditing(kafka_bootstrap, topics, app_id=f"{topic_prefix}auditor") as auditor:
        await wait_seen(auditor.url, final)
        view = await auditor_view(auditor.url)
        assert view[str(UUID(int=100))].status == "compensated"
        assert view[str(UUID(int=100))].compensated == ("book_hotel",)
        assert view[str(completed[0])].steps == ("book_hotel", "charge")
        await outcome_totals(auditor.url, {"completed": 3, "compensated": 1})
        code, out = await saga_cli(database_url, "audit", "reconcile", "--auditor", auditor.url)
        assert code == 0, out
        assert "0 discrepancy(ies)" in out

    # 2. An auditor that never got one saga's saga.completed reports exactly that saga.
    lost = completed[1]
    filtered = f"{topic_prefix}saga.events.filtered"
    await copy_events_without(kafka_bootstrap, topics.events, filtered, lost, "saga.completed")
    async with auditing(
        kafka_bootstrap, topics, app_id=f"{topic_prefix}auditor2", source=filtered
    ) as auditor:
        await wait_seen(auditor.url, final | {lost: "step.completed"})
        report = await reconcile_database_at(database_url, auditor.url)
        assert [(d.saga_id, str(d.kind), d.database, d.auditor) for d in report] == [
            (str(lost), "status", "completed", "running")
        ]
        code, out = await saga_cli(
            database_url, "audit", "reconcile", "--auditor", auditor.url, "--json"
        )
        assert code == 1, out
        body = json.loads(out)
        assert [(d["saga_id"], d["kind"]) for d in body["discrepancies"]] == [(str(lost), "status")]


async def reconcile_database_at(database_url: str, url: str):  # type: ignore[no-untyped-def]
    from saga.store import create_engine

    engine = create_engine(database_url)
    try:
        report = await reconcile_database(engine, await auditor_view(url), settled_only=True)
    finally:
        await engine.dispose()
    assert report.database_sagas == 4
    return report.discrepancies
