"""The participant's Kafka clients (from :mod:`saga.kafka`) and its rebalance listener."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from saga.kafka import (
    committed_consumer,
    idempotent_producer,
    transactional_producer,
    translate_kafka_errors,
)

__all__ = [
    "RebalanceHooks",
    "committed_consumer",
    "idempotent_producer",
    "topic_partition",
    "transactional_producer",
    "translate_kafka_errors",
]


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
