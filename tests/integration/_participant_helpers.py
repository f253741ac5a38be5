"""Helpers for the participant and services integration tests (real Kafka, real DBs)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts import Envelope, MessageKind
from saga.deadletter import DeadLetterRecord
from saga.kafka import TopicSpec, committed_consumer, ensure_topics
from saga.participant import Participant
from saga.topics import Topics

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def create_topics(bootstrap: str, topics: Topics, *participants: str) -> None:
    specs = [TopicSpec(name=topics.replies, partitions=2), TopicSpec(name=topics.dlq)]
    specs += [TopicSpec(name=topics.commands(p), partitions=2) for p in participants]
    await ensure_topics(bootstrap, specs)


def command(
    message_type: str,
    payload: dict[str, Any],
    *,
    kind: MessageKind = MessageKind.COMMAND,
    step: str = "step1",
    attempt: int = 1,
) -> Envelope:
    return Envelope(
        saga_id=uuid.uuid4(),
        saga_type="test_saga",
        saga_version=3,
        step=step,
        attempt=attempt,
        kind=kind,
        type=message_type,
        payload=payload,
        correlation_id=uuid.uuid4(),
    )


async def send(
    bootstrap: str,
    topic: str,
    records: Sequence[Envelope | tuple[bytes | None, bytes | None]],
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for record in records:
            if isinstance(record, Envelope):
                key, value = str(record.saga_id).encode(), record.to_bytes()
            else:
                key, value = record
            await producer.send_and_wait(
                topic, value, key=key, headers=[("traceparent", TRACEPARENT)]
            )
    finally:
        await producer.stop()


async def send_dead_letters(
    bootstrap: str, topic: str, records: Sequence[DeadLetterRecord]
) -> None:
    """Send dead-letter records (each with its own key, value and headers) to ``topic``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(
                topic, value=record.value, key=record.key, headers=list(record.headers)
            )
    finally:
        await producer.stop()


async def read(bootstrap: str, topic: str, expect: int, *, settle_s: float = 1.0) -> list[Any]:
    """Read committed records from the start of ``topic`` until ``expect`` arrived and no
    more came for ``settle_s`` (or 30 s passed)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    got: list[Any] = []
    try:
        parts = consumer.partitions_for_topic(topic)
        for _ in range(50):
            if parts:
                break
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        consumer.assign([TopicPartition(topic, p) for p in sorted(parts or ())])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        quiet_since = loop.time()
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                got.extend(records)
            if batch:
                quiet_since = loop.time()
            elif len(got) >= expect and loop.time() - quiet_since >= settle_s:
                break
    finally:
        await consumer.stop()
    return got


async def read_first(bootstrap: str, topic: str, count: int) -> list[Any]:
    """The first ``count`` committed records of ``topic`` (at least; within 30 s)."""
    consumer = committed_consumer(bootstrap, [topic])
    await consumer.start()
    got: list[Any] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(records)
    finally:
        await consumer.stop()
    return got


def envelopes(records: Sequence[Any]) -> list[Envelope]:
    return [Envelope.from_bytes(r.value) for r in records]


@contextlib.asynccontextmanager
async def running(participant: Participant) -> AsyncIterator[asyncio.Task[None]]:
    async with participant:
        task = asyncio.create_task(participant.run())
        try:
            yield task
        finally:
            participant.stop()
            with contextlib.suppress(Exception):
                await task
