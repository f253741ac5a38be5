"""The participant's Kafka clients, its rebalance listener and its group offset commits.

The clients come from :mod:`saga.kafka`; committing the consumer group's offsets is
best effort here (a failure is logged), see :func:`commit_group_offsets`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from saga.errors import TransportError
from saga.kafka import (
    committed_consumer,
    idempotent_producer,
    transactional_producer,
    translate_kafka_errors,
)

__all__ = [
    "RebalanceHooks",
    "commit_group_offsets",
    "committed_consumer",
    "idempotent_producer",
    "topic_partition",
    "transactional_producer",
    "translate_kafka_errors",
]

log = logging.getLogger("saga.participant")


class RebalanceHooks(ConsumerRebalanceListener):  # type: ignore[misc]
    """Forward aiokafka's rebalance callbacks to two coroutine functions."""

    def __init__(
        self,
        on_assigned: Callable[[set[Any]], Awaitable[None]],
        on_revoked: Callable[[set[Any]], Awaitable[None]],
    ) -> None:
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Wait for the batch in flight before the partitions go to another member."""
        await self._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Seek to the offsets stored in the database (transactional mode)."""
        await self._on_assigned(set(assigned))


def topic_partition(topic: str, partition: int) -> Any:
    """Return an aiokafka ``TopicPartition``."""
    return TopicPartition(topic, partition)


async def commit_group_offsets(
    consumer: Any, topic: str, next_offsets: Mapping[int, int], *, owner: str
) -> None:
    """Commit the consumer group's offsets in Kafka; a failure is logged, not raised.

    Simple mode: this is what marks the batch consumed. Transactional mode: only for
    lag monitoring; the database holds the offsets that count.
    """
    offsets = {topic_partition(topic, p): o for p, o in next_offsets.items()}
    try:
        with translate_kafka_errors(f"{owner}: commit offsets"):
            await consumer.commit(offsets)
    except TransportError as exc:
        # Rebalanced away meanwhile: the new owner re-reads (and dedupes) the batch.
        log.warning("%s: offset commit failed: %s", owner, exc)
