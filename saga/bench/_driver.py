"""The driver's side of a saga phase: it starts sagas and sees them end.

It writes the starts into the coordinator's database and learns from the lifecycle
events topic that a saga ended.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer

from contracts import new_message_id
from saga.bench._config import BenchConfig
from saga.bench._definition import step_name
from saga.bench._phase import Tracker
from saga.coordinator import Writes, decision_writes
from saga.definition import SagaDefinition
from saga.engine import StartSaga, transition
from saga.kafka import committed_consumer
from saga.store import SqlStore
from saga.topics import Topics

TERMINAL_EVENTS: dict[bytes, str] = {
    b'"type":"saga.completed"': "completed",
    b'"type":"saga.compensated"': "compensated",
    b'"type":"saga.stuck"': "stuck",
    b'"type":"saga.aborted"': "aborted",
}
"""Substrings of a terminal lifecycle event (compact JSON) -> saga outcome."""


class SagaInputs:
    """Saga inputs: the padding, and which sagas fail (an exact share, spread evenly)."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.n = 0
        self.pad = "x" * cfg.payload_bytes
        self.fail_step = step_name(cfg.steps - 1)

    def inputs(self, k: int) -> list[dict[str, Any]]:
        out = []
        ratio = self.cfg.failure_ratio
        for _ in range(k):
            i = self.n
            self.n += 1
            fails = ratio > 0 and int((i + 1) * ratio) > int(i * ratio)
            out.append({"pad": self.pad, "fail": self.fail_step if fails else ""})
        return out


async def start_sagas(
    store: SqlStore,
    definition: SagaDefinition,
    topics: Topics,
    inputs: list[dict[str, Any]],
    partitions: int,
) -> list[str]:
    """Start sagas in ONE transaction: the writes of ``start_saga``, batched."""
    now = datetime.now(UTC)
    writes = Writes()
    ids: list[str] = []
    for saga_input in inputs:
        sid = new_message_id()
        decision = transition(
            None, StartSaga(saga_id=sid, input=saga_input, correlation_id=sid), definition, now
        )
        writes.extend(
            decision_writes(decision, before=None, topics=topics, now=now, partitions=partitions)
        )
        ids.append(str(sid))
    async with store.transaction() as tx:
        await writes.write(tx)
    return ids


async def follow_events(
    bootstrap: str, topics: Topics, tracker: Tracker, stop: asyncio.Event
) -> None:
    """Feed terminal lifecycle events into the tracker until ``stop``."""

    def on_event(value: bytes) -> None:
        for marker, status in TERMINAL_EVENTS.items():
            if marker in value:
                env = json.loads(value)
                ended = datetime.fromisoformat(env["occurred_at"]).timestamp()
                tracker.finish(env["saga_id"], status, ended)
                return

    group = f"{topics.prefix}bench-driver"
    await consume(committed_consumer(bootstrap, [topics.events], group), stop, on_event)


async def consume(
    consumer: AIOKafkaConsumer, stop: asyncio.Event, on_value: Callable[[bytes], None]
) -> None:
    """Start ``consumer`` and hand every record's value to ``on_value`` until ``stop``."""
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=5_000)
            for records in batch.values():
                for record in records:
                    on_value(record.value)
    finally:
        await consumer.stop()
