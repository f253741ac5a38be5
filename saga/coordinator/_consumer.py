"""The coordinator's Kafka input: a read_committed consumer whose offsets live in the database.

Theory of operation
-------------------
Kafka group offsets are *not* the source of truth. Every batch the coordinator applies
stores the next offset of each partition in the same database transaction as the saga
state (``saga_consumer_offsets``). When the group assigns partitions to this process,
the rebalance listener seeks each one to the offset stored in the database (or to the
beginning when none is stored). A crash therefore replays at most the last uncommitted
batch, and the inbox table makes that replay harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

log = logging.getLogger("saga.coordinator")

OffsetLoader = Callable[[str], Awaitable[dict[int, int]]]
"""``topic -> {partition: next_offset}`` as stored in the database."""


class SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, seek every partition to the offset stored in the database."""

    def __init__(self, consumer: AIOKafkaConsumer, load_offsets: OffsetLoader) -> None:
        self._consumer = consumer
        self._load = load_offsets
        self.assigned: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Forget revoked partitions; nothing to commit (offsets are committed per batch)."""
        self.assigned -= set(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Seek to the stored offsets before the first fetch."""
        by_topic: dict[str, list[TopicPartition]] = {}
        for tp in assigned:
            by_topic.setdefault(tp.topic, []).append(tp)
        for topic, tps in by_topic.items():
            stored = await self._load(topic)
            for tp in tps:
                if tp.partition in stored:
                    self._consumer.seek(tp, stored[tp.partition])
                else:
                    await self._consumer.seek_to_beginning(tp)
        self.assigned |= set(assigned)
        log.info(
            "partitions assigned",
            extra={"partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)},
        )
