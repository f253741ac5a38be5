"""A consumer-group member whose offsets and partition ownership live in the database.

Theory of operation
-------------------
The coordinator and transactional participants consume the same way:

1. Kafka's group protocol assigns partitions. The rebalance listener only *marks* them
   as pending (aiokafka may hand out records fetched from the group's Kafka offsets
   while a listener awaits, and it merely logs a listener's exception).
2. Between two polls, :meth:`PartitionConsumer.poll` drops the records of pending
   partitions and *claims* them in one database transaction
   (:func:`saga.store.claim_partitions`): the epoch of each goes up by one, and the
   consumer seeks to the offset stored there. The claim waits for, and then sees, a
   batch the previous owner had already written.
3. The caller handles a batch inside ``async with consumer.batch()`` and stores the
   offsets with :meth:`PartitionConsumer.commit` in the batch's own transaction, which
   matches only rows whose epoch is still ours. A batch of a member that lost a
   partition raises :class:`saga.errors.PartitionFenced` and commits nothing.
4. Revocation waits for the batch in flight (``batch()`` holds the lock the revocation
   listener takes), so a partition is given up only after its last batch committed or
   rolled back; from then on its records are dropped.

Kafka group offsets are never the source of truth (participants commit them after
the fact, for lag monitoring only).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from uuid import uuid4

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from saga.errors import PartitionFenced
from saga.kafka import GroupMember, close_quietly, group_member_of, translate_kafka_errors
from saga.lifecycle import Clock, utc_now
from saga.store import OffsetCommit, claim_partitions, commit_offsets, translate_errors

T = TypeVar("T")

log = logging.getLogger("saga.partitions")

Records = dict[int, list[ConsumerRecord[Any, Any]]]
"""``partition -> records`` of one poll, in offset order."""


def member_name() -> str:
    """A name for this process in ownership rows and logs: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"


class PartitionConsumer:
    """Consume one topic as a group member, with offsets and ownership in the database.

    Args:
        engine: The database holding ``saga_consumer_offsets``.
        bootstrap_servers: Kafka bootstrap servers.
        topic: The topic to consume.
        group_id: The consumer group (derived from the deployment's prefix by callers).
        max_batch: Most records one poll returns.
        on_assignment: Called with the whole assignment and the group member and
            generation it came with, after every rebalance (the relays of the owned
            partitions follow it).
        member: This member's name in the ownership rows (default :func:`member_name`).
        clock: Time of the claims.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        max_batch: int = 500,
        on_assignment: Callable[[frozenset[int], GroupMember | None], None] | None = None,
        member: str | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.topic = topic
        self.group_id = group_id
        self.member = member or member_name()
        self._engine = engine
        self._bootstrap = bootstrap_servers
        self._max_batch = max_batch
        self._on_assignment = on_assignment
        self._clock = clock
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._pending: set[int] = set()
        self._epochs: dict[int, int] = {}
        self._assigned: frozenset[int] = frozenset()
        self._member: GroupMember | None = None
        self.rebalances = 0
        """How many assignments this member has received."""

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Join the group (the first assignment arrives with the first polls).

        Raises:
            saga.errors.TransportError: Kafka cannot be reached.
        """
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self._max_batch,
        )
        consumer.subscribe([self.topic], listener=_Listener(self, consumer))
        try:
            with translate_kafka_errors(f"join consumer group {self.group_id}"):
                await consumer.start()
        except BaseException:
            await close_quietly(consumer)
            raise
        self._consumer = consumer

    async def stop(self) -> None:
        """Leave the group (after the batch in flight, which holds the lock)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await close_quietly(consumer)
        self._epochs.clear()
        self._pending.clear()

    @property
    def kafka(self) -> AIOKafkaConsumer:
        """The underlying aiokafka consumer (started)."""
        if self._consumer is None:
            raise RuntimeError(f"the consumer of {self.topic} is not started")
        return self._consumer

    # -- ownership -----------------------------------------------------------------------

    @property
    def epochs(self) -> Mapping[int, int]:
        """``partition -> epoch`` of every partition this member owns now."""
        return dict(self._epochs)

    @property
    def assignment(self) -> frozenset[int]:
        """The partitions Kafka assigned at the last rebalance (owned or about to be)."""
        return self._assigned

    @property
    def group_member(self) -> GroupMember | None:
        """This member's id and generation as of the last assignment."""
        return self._member

    def fenced(self, exc: PartitionFenced) -> None:
        """Stop handling partitions another member claimed; wait for the next rebalance."""
        for p in exc.partitions:
            self._epochs.pop(p, None)
            if self._consumer is not None:
                tp = TopicPartition(self.topic, p)
                if tp in self._consumer.assignment():
                    self._consumer.pause(tp)
        log.warning(
            "%s: %s; its records are left to the new owner until the group rebalances",
            self.member,
            exc,
        )

    def _assigned_now(self, partitions: set[int], member: GroupMember) -> None:
        self.rebalances += 1
        self._assigned = frozenset(partitions)
        self._member = member
        self._pending |= partitions
        consumer = self._consumer
        if consumer is not None:
            paused = [tp for tp in consumer.paused() if tp.partition in partitions]
            if paused:
                consumer.resume(*paused)
        log.info(
            "%s assigned %s",
            self.member,
            ", ".join(f"{self.topic}[{p}]" for p in sorted(partitions)) or "nothing",
        )
        if self._on_assignment is not None:
            self._on_assignment(self._assigned, self._member)

    async def _revoked_now(self, partitions: set[int]) -> None:
        async with self._lock:  # the batch in flight commits or rolls back first
            for p in partitions:
                self._epochs.pop(p, None)
            self._pending -= partitions

    # -- polling -------------------------------------------------------------------------

    async def poll(self, timeout_ms: int) -> Records:
        """Fetch records of the partitions this member owns (claiming new ones first).

        Raises:
            saga.errors.TransportError: Kafka failed.
            saga.errors.StoreError: Claiming failed; the polled records are rewound.
            saga.errors.ConfigError: Another consumer group's offsets of the topic are
                stored in this database.
        """
        consumer = self.kafka
        with translate_kafka_errors(f"poll {self.topic}"):
            fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=self._max_batch)
        batch: Records = {tp.partition: list(rs) for tp, rs in fetched.items() if rs}
        unclaimed = set(self._pending)
        if unclaimed:
            # Records of partitions not claimed yet came from wherever Kafka pointed; they
            # are dropped, and the claim seeks to where the database says to go on.
            first = {p: rs[0].offset for p, rs in batch.items() if p in unclaimed}
            try:
                await self._claim(first)
            except BaseException:
                self.rewind(batch)
                raise
        return {p: rs for p, rs in batch.items() if p in self._epochs and p not in unclaimed}

    async def _claim(self, fetched_from: Mapping[int, int]) -> None:
        async with self._lock:
            wanted = set(self._pending)
            if not wanted:
                return
            with translate_errors(f"claim {self.topic} partitions"):
                async with self._engine.begin() as conn:
                    claims = await claim_partitions(
                        conn,
                        self.group_id,
                        self.topic,
                        wanted,
                        member=self.member,
                        now=self._clock(),
                    )
            consumer = self.kafka
            assignment = consumer.assignment()
            for p, claim in claims.items():
                tp = TopicPartition(self.topic, p)
                if tp not in assignment:
                    continue  # revoked meanwhile; the new epoch only fences older owners
                if claim.next_offset is not None:
                    consumer.seek(tp, claim.next_offset)
                elif p in fetched_from:
                    # Nothing stored: start where Kafka's group offsets pointed.
                    consumer.seek(tp, fetched_from[p])
                self._epochs[p] = claim.epoch
            self._pending -= wanted
            log.info(
                "%s owns %s",
                self.member,
                ", ".join(f"{self.topic}[{p}]@{e}" for p, e in sorted(self._epochs.items())),
            )

    @asynccontextmanager
    async def batch(self, records: Records) -> AsyncIterator[Records]:
        """Hold off revocation while a batch is handled; yields the still-owned records."""
        async with self._lock:
            yield {p: rs for p, rs in records.items() if p in self._epochs}

    async def handle(self, records: Records, apply: Callable[[Records], Awaitable[T]]) -> T | None:
        """Apply one polled batch with :meth:`batch` held, the one way every consumer does.

        A batch that fails is rewound (its records are read again) and the error raised;
        a batch whose partitions another member claimed meanwhile commits nothing, is
        rewound and left to the new owner (``None`` is returned).
        """
        async with self.batch(records) as owned:
            try:
                return await apply(owned)
            except PartitionFenced as exc:
                self.fenced(exc)
                self.rewind(owned)
                return None
            except BaseException:
                self.rewind(owned)
                raise

    def offset_commit(self, offsets: Mapping[int, int]) -> OffsetCommit:
        """``offsets`` to store with a batch's writes, fenced by the epochs held now."""
        return OffsetCommit(self.group_id, self.topic, dict(offsets), dict(self._epochs))

    async def commit(self, conn: AsyncConnection, offsets: Mapping[int, int]) -> None:
        """Store next offsets in the batch's transaction, checked against our epochs.

        Raises:
            PartitionFenced: Another member claimed one of the partitions since.
        """
        with translate_errors(f"store {self.topic} offsets"):
            await commit_offsets(conn, self.group_id, self.topic, offsets, self._epochs)

    def rewind(self, records: Mapping[int, Sequence[ConsumerRecord[Any, Any]]]) -> None:
        """Seek back to the first record of each partition (a batch that did not commit)."""
        consumer = self._consumer
        if consumer is None:
            return
        assignment = consumer.assignment()
        for p, rs in records.items():
            tp = TopicPartition(self.topic, p)
            if rs and tp in assignment:
                consumer.seek(tp, rs[0].offset)

    async def lag(self) -> dict[int, int]:
        """Records not consumed yet per assigned partition (high watermark - position)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        lag: dict[int, int] = {}
        with translate_kafka_errors(f"read the lag of {self.topic}"):
            for tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    lag[tp.partition] = max(0, highwater - await consumer.position(tp))
        return lag


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: PartitionConsumer, consumer: AIOKafkaConsumer) -> None:
        self._owner = owner
        self._consumer = consumer  # its own: the first assignment may come during start()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner._revoked_now({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        member = group_member_of(self._consumer, self._owner.group_id)
        self._owner._assigned_now({tp.partition for tp in assigned}, member)
