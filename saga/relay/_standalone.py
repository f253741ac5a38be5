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
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from sqlalchemy.ext.asyncio import AsyncEngine

from saga.errors import SagaError
from saga.kafka import GroupMember, close_quietly, group_member_of, translate_kafka_errors
from saga.lifecycle import wait_at_most
from saga.relay._config import RelayConfig
from saga.relay._pool import RelayPool
from saga.retry import Startup
from saga.topics import Topics

log = logging.getLogger("saga.relay")


class _Follow(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        group_id: str,
        follow: Callable[[frozenset[int], GroupMember], None],
    ) -> None:
        self._consumer = consumer
        self._group_id = group_id
        self._follow = follow

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Nothing to do: the relays keep going until the new assignment is known."""

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self._consumer.pause(*assigned)  # a member of the group, never a reader
        self._follow(
            frozenset(tp.partition for tp in assigned),
            group_member_of(self._consumer, self._group_id),
        )


class RelayGroupMember:
    """One ``saga relay`` process: a member of the relay group, running its partitions' relays.

    Example::

        member = RelayGroupMember(engine, bootstrap_servers, topics, config, stop)
        pool = await member.run()  # until stop is set
        member.readiness()         # for /readyz, meanwhile

    Args:
        engine: The coordinators' database.
        bootstrap_servers: Kafka bootstrap servers.
        topics: Topic names (the replies topic's partitions own the lanes).
        config: Options of every relay.
        stop: Set it to stop (it also ends a wait for Kafka at start-up).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        bootstrap_servers: str,
        topics: Topics,
        config: RelayConfig,
        stop: asyncio.Event,
    ) -> None:
        self._engine = engine
        self._bootstrap = bootstrap_servers
        self._topics = topics
        self._config = config
        self._stop = stop
        self._startup = Startup("relay start-up", stop, log)
        self._failures: list[BaseException] = []
        self._pool: RelayPool | None = None
        self._joined = False  # the group assigned this member its partitions once

    def readiness(self) -> str | None:
        """Why the process is not ready (``None``: ready; for ``/readyz``)."""
        if self._failures:
            return f"a relay failed: {self._failures[0]}"
        if self._startup.waiting_for is not None:
            return f"starting: {self._startup.waiting_for}"
        if not self._joined:
            return f"joining the consumer group {self._topics.relay_group}"
        return None

    def _failed(self, exc: BaseException) -> None:
        self._failures.append(exc)
        self._stop.set()

    def _assigned(self, partitions: frozenset[int], member: GroupMember) -> None:
        self._joined = True
        assert self._pool is not None
        self._pool.follow(partitions, member)

    async def run(self) -> RelayPool:
        """Publish the replies partitions this process is assigned until ``stop`` is set.

        Returns:
            The pool (closed), for its counters.

        Raises:
            saga.errors.SagaError: A relay failed for good, or ``stop`` was set while
                the relay waited for Kafka to join the group.
        """
        topics = self._topics
        async with RelayPool(
            self._engine,
            self._bootstrap,
            topics,
            topics.replies,
            self._config,
            on_failure=self._failed,
        ) as pool:
            self._pool = pool

            async def join() -> AIOKafkaConsumer:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self._bootstrap,
                    group_id=topics.relay_group,
                    enable_auto_commit=False,
                    isolation_level="read_committed",
                )
                consumer.subscribe(
                    [topics.replies], listener=_Follow(consumer, topics.relay_group, self._assigned)
                )
                try:
                    with translate_kafka_errors(f"join consumer group {topics.relay_group}"):
                        await consumer.start()
                except BaseException:
                    await close_quietly(consumer)  # a failed start cannot be started again
                    raise
                return consumer

            # Started while the broker is down, the relay waits for it.
            consumer = await self._startup(join)
            try:
                while not self._stop.is_set():
                    try:
                        with translate_kafka_errors("take part in the relay group"):
                            await consumer.getmany(timeout_ms=500)
                    except SagaError as exc:
                        if not exc.retriable:
                            raise
                        log.warning("relay group: %s; retrying", exc)
                        await wait_at_most(self._stop, 1.0)
            finally:
                await close_quietly(consumer)
        if self._failures:
            raise self._failures[0]
        return pool
