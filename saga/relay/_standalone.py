"""Relays in processes of their own (``saga relay``), following a consumer group.

With ``saga coordinator --no-relay`` the relays of the replies topic's partitions run
in ``saga relay`` processes instead. They share those partitions through a consumer
group of their own (``<prefix>saga-relay``) that reads nothing: its members only take
part in the group protocol, and each runs the relays of the partitions it is assigned
(:class:`~saga.relay.RelayPool`). As everywhere, the transactional id of a partition's
relay fences the previous one when the partition moves.

Run the replies relays either inside every coordinator or in ``saga relay``
processes, not both: the two kinds would keep fencing each other's relays (correct, but
slow).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from sqlalchemy.ext.asyncio import AsyncEngine

from saga.errors import SagaError
from saga.kafka import close_quietly, translate_kafka_errors
from saga.lifecycle import wait_at_most
from saga.relay._config import RelayConfig
from saga.relay._pool import RelayPool
from saga.retry import retry_while_unavailable
from saga.topics import Topics

log = logging.getLogger("saga.relay")


class _Follow(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: AIOKafkaConsumer, pool: RelayPool) -> None:
        self._consumer = consumer
        self._pool = pool

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Nothing to do: the relays keep going until the new assignment is known."""

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self._consumer.pause(*assigned)  # a member of the group, never a reader
        self._pool.follow(frozenset(tp.partition for tp in assigned))


async def run_relays(
    engine: AsyncEngine,
    bootstrap_servers: str,
    topics: Topics,
    config: RelayConfig,
    stop: asyncio.Event,
) -> RelayPool:
    """Publish the replies partitions this process is assigned until ``stop`` is set.

    Returns:
        The pool (closed), for its counters.

    Raises:
        saga.errors.SagaError: A relay failed for good, or ``stop`` was set while the
            relay waited for Kafka to join the group.
    """
    failures: list[BaseException] = []

    def failed(exc: BaseException) -> None:
        failures.append(exc)
        stop.set()

    async with RelayPool(
        engine, bootstrap_servers, topics, topics.replies, config, on_failure=failed
    ) as pool:

        async def join() -> AIOKafkaConsumer:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap_servers,
                group_id=topics.relay_group,
                enable_auto_commit=False,
                isolation_level="read_committed",
            )
            consumer.subscribe([topics.replies], listener=_Follow(consumer, pool))
            try:
                with translate_kafka_errors(f"join consumer group {topics.relay_group}"):
                    await consumer.start()
            except BaseException:
                await close_quietly(consumer)  # a failed start cannot be started again
                raise
            return consumer

        # Started while the broker is down, the relay waits for it.
        consumer = await retry_while_unavailable(join, what="relay start-up", stop=stop, logger=log)
        try:
            while not stop.is_set():
                try:
                    with translate_kafka_errors("take part in the relay group"):
                        await consumer.getmany(timeout_ms=500)
                except SagaError as exc:
                    if not exc.retriable:
                        raise
                    log.warning("relay group: %s; retrying", exc)
                    await wait_at_most(stop, 1.0)
        finally:
            await close_quietly(consumer)
    if failures:
        raise failures[0]
    return pool
