"""The auditor's web view against real Kafka, fed hand-made lifecycle events."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import aiohttp
import pytest
from _events import trip_event
from aiokafka import AIOKafkaProducer

from saga.audit import auditor_outcome_pages
from saga.chaos import free_port
from saga.errors import AuditorUnavailable, ConfigError, TransportError
from saga.health import HealthServer
from saga.kafka import TopicSpec, ensure_topics
from saga.topics import Topics
from services.audit import Auditor, AuditorConfig

pytestmark = [pytest.mark.kafka]


def event(sid: UUID, type_: str, revision: int, step: str | None = None) -> bytes:
    return trip_event(sid, type_, revision, step, status="x").to_bytes()


def run(sid: UUID, outcome: str) -> list[bytes]:
    return [
        event(sid, "saga.started", 1),
        event(sid, "step.started", 1, "a"),
        event(sid, "step.completed", 2, "a"),
        event(sid, f"saga.{outcome}", 2),
    ]


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return r.status, await r.json()


async def test_web_view_pages_outcomes_and_counts_each_outcome_once(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    await ensure_topics(kafka_bootstrap, [TopicSpec(name=topics.events, partitions=3)])
    sagas = [UUID(int=i) for i in range(1, 6)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topics.events, b"not an envelope", key=b"junk")
        for i, sid in enumerate(sagas):
            records = run(sid, "completed" if i % 2 == 0 else "compensated")
            if i == 0:
                records = records + records  # a replay (aborted relay transaction, re-sent)
            for value in records:
                await producer.send_and_wait(topics.events, value, key=str(sid).encode())
    finally:
        await producer.stop()

    config = AuditorConfig(bootstrap_servers=kafka_bootstrap, topics=topics, web_port=free_port())
    auditor = Auditor(config)
    assert auditor.readiness() == "the auditor is unopened"
    health = HealthServer("127.0.0.1", free_port(), auditor.readiness)
    async with health, auditor:
        with pytest.raises(RuntimeError, match="opened once"):
            await auditor.__aenter__()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        body: Any = {}
        while loop.time() < deadline:
            _, body = await get_json(f"{auditor.url}/counts")
            if sum(row["count"] for row in body["counts"]) >= 5:
                break
            await asyncio.sleep(0.2)
        totals = {row["outcome"]: row["count"] for row in body["counts"]}
        assert totals == {"completed": 3, "compensated": 2}
        # It counted events, so it joined its group: ready.
        ready = f"http://127.0.0.1:{health.port}/readyz"
        assert await get_json(ready) == (200, {"status": "ready"})

        status, first = await get_json(f"{auditor.url}/sagas/{sagas[0]}")
        assert status == 200
        assert first["status"] == "completed"
        assert first["steps"] == ["a"]
        assert first["events"] == 8
        status, missing = await get_json(f"{auditor.url}/sagas/{UUID(int=99)}")
        assert status == 404
        assert "no events" in missing["error"]

        pages = [p async for p in auditor_outcome_pages(auditor.url, page_size=2)]
        assert [len(p) for p in pages] == [2, 2, 1]
        assert [o.saga_id for p in pages for o in p] == [str(s) for s in sagas]
        status, _ = await get_json(f"{auditor.url}/outcomes?limit=x")
        assert status == 400


async def test_a_missing_topic_or_auditor_is_a_clear_error(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    config = AuditorConfig(
        bootstrap_servers=kafka_bootstrap,
        topics=Topics(prefix=topic_prefix),
        web_port=free_port(),
    )
    with pytest.raises(ConfigError, match="does not exist"):
        async with Auditor(config):
            pass
    with pytest.raises(AuditorUnavailable, match="auditor at"):
        [p async for p in auditor_outcome_pages(f"http://127.0.0.1:{free_port()}")]


async def test_an_auditor_started_without_kafka_waits_until_stopped(topic_prefix: str) -> None:
    # Nothing listens on the bootstrap port: opening waits (it does not fail) until
    # stop(), which ends the wait at once with the Kafka error.
    config = AuditorConfig(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        topics=Topics(prefix=topic_prefix),
        web_port=free_port(),
    )
    auditor = Auditor(config)
    opening = asyncio.create_task(auditor.__aenter__())
    await asyncio.sleep(1.5)
    assert not opening.done(), "the auditor gave up on Kafka"
    reason = auditor.readiness() or ""
    assert reason.startswith("starting: Kafka unavailable (attempt"), reason
    auditor.stop()
    with pytest.raises(TransportError, match="read topic metadata"):
        await asyncio.wait_for(opening, 5)
    assert auditor.state.value == "closed"
    assert auditor.readiness() == "the auditor is closed"
