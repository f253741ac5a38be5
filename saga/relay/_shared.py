"""One Kafka transaction for the batches of every lane a process owns.

Theory of operation
-------------------
With ``RelayConfig.producer_per = "process"`` a :class:`~saga.relay.RelayPool` gives
its relays one :class:`ProcessTransactions` instead of a producer each. A relay still
reads, marks and checkpoints its own lane; only the Kafka transaction is shared:

* **Group commit.** A relay hands its batch (rows plus the lane's checkpoint record)
  to :meth:`ProcessTransactions.publish` and waits. One task sends every batch handed
  over meanwhile in ONE transaction, then the next. While a transaction is in flight
  the next one fills up, so at any rate a process runs about one Kafka transaction at
  a time instead of one per lane.
* **Fencing by generation** (as Kafka Streams does since KIP-447). The producer's
  transactional id is the process's own, so a new owner of a lane cannot fence the old
  owner by id. Instead every transaction commits, after all of its records are
  acknowledged and before it commits, an offset of the group whose assignment gave
  this process its lanes, naming the member and generation of that assignment
  (:func:`saga.kafka.send_fenced_offsets`). The group coordinator refuses it once the
  group has rebalanced, and the transaction aborts. Every lane of a transaction must be
  in the assignment whose generation it names (checked right before the offsets go).
* **Why the new owner sees every committed batch.** A lane's new owner starts after
  the rebalance, and reads the checkpoint topic up to the high watermark it sees then
  (``read_last_checkpoint``), waiting for every transaction open below it. A zombie
  transaction that could still commit had its offsets accepted before the rebalance,
  so its checkpoint records, acknowledged before that, lie below that watermark: the
  new owner waits for it and sees its checkpoint if it commits. A zombie transaction
  whose offsets come later is refused and aborts.

The offsets committed are those of the checkpoint partitions the transaction wrote
(next offset after its checkpoint record); nothing consumes the checkpoint topic
through the group, so they fence and otherwise mean nothing.

Costs. A process that dies mid-transaction leaves it open until the broker aborts it
after ``transaction_timeout_ms`` (a new owner's id-based fencing aborted it at once):
until then read-committed consumers of the partitions it wrote, and the new owners'
checkpoint reads, wait. Any failure fails every batch of the transaction; their relays
then read their checkpoints again and retry, as after a failure of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from uuid import uuid4

from aiokafka import AIOKafkaProducer, TopicPartition

from saga.errors import RecordRefused, SagaError, TransportError
from saga.kafka import (
    GroupMember,
    close_quietly,
    install_group_fencing,
    map_kafka_error,
    send_fenced_offsets,
    transactional_producer,
    translate_kafka_errors,
)
from saga.relay._checkpoint import encode_checkpoint
from saga.relay._config import RelayConfig
from saga.relay._outbox import OutboxRow
from saga.relay._sending import crash_if_due, delivered, send_row

log = logging.getLogger("saga.relay")


@dataclasses.dataclass(slots=True)
class _Batch:
    shard: int
    checkpoint_key: bytes
    rows: list[OutboxRow]
    named: list[str]  # message ids the lane's checkpoint names
    done: asyncio.Future[None]


@dataclasses.dataclass(frozen=True, slots=True)
class _Assignment:
    member: GroupMember | None
    shards: frozenset[int]


def process_transactional_id(owner_topic: str) -> str:
    """A transactional id of this process alone: ``<owner_topic>.relays.<host>.<pid>.<random>``."""
    return f"{owner_topic}.relays.{socket.gethostname()}.{os.getpid()}.{uuid4().hex[:8]}"


class ProcessTransactions:
    """The one transactional producer of a pool's lanes (see the module docstring).

    Args:
        bootstrap_servers: Kafka bootstrap servers.
        checkpoint_topic: Where the lanes' checkpoint records go.
        config: The relays' options (timeouts, fault injection).
        transactional_id: This process's id (default :func:`process_transactional_id`).
        before_commit: Test seam: awaited in each transaction before the offsets go.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        checkpoint_topic: str,
        config: RelayConfig,
        transactional_id: str,
        *,
        before_commit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._checkpoints = checkpoint_topic
        self._config = config
        self.transactional_id = transactional_id
        self._before_commit = before_commit
        self._assignment = _Assignment(None, frozenset())
        self._pending: list[_Batch] = []
        self._has_pending = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._connecting = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0
        """Kafka transactions committed since this object was made."""

    # -- ownership ---------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Lane batches waiting for the next transaction."""
        return len(self._pending)

    def follow(self, shards: frozenset[int], member: GroupMember | None) -> None:
        """Publish for ``shards`` under ``member``'s generation from now on."""
        self._assignment = _Assignment(member, shards)

    # -- the producer ------------------------------------------------------------------

    async def producer(self) -> AIOKafkaProducer:
        """The started producer, connected if need be.

        Connecting runs ``InitProducerId``: an open transaction of an earlier connection
        is finished or aborted first.
        """
        async with self._connecting:
            if self._producer is None:
                producer = transactional_producer(
                    self._bootstrap,
                    self.transactional_id,
                    transaction_timeout_ms=self._config.transaction_timeout_ms,
                )
                install_group_fencing(producer)
                ok = False
                try:
                    with translate_kafka_errors(f"connect relays {self.transactional_id}"):
                        async with asyncio.timeout(self._config.connect_timeout_ms / 1000):
                            await producer.start()
                    ok = True
                except TimeoutError as exc:
                    raise TransportError(
                        f"connect relays {self.transactional_id}: Kafka did not answer in"
                        f" {self._config.connect_timeout_ms} ms"
                    ) from exc
                finally:
                    if not ok:
                        await close_quietly(producer)
                self._producer = producer
            return self._producer

    async def _abort(self) -> None:
        """End a failed transaction now, or drop the producer if Kafka cannot say.

        An explicit abort lets the lanes' readers (and new owners' checkpoint reads) go
        on at once; a dropped producer's transaction is aborted by the next
        ``InitProducerId`` of this id, or by the broker after ``transaction_timeout_ms``.
        """
        producer = self._producer
        if producer is None:
            return
        try:
            with translate_kafka_errors("abort the relays' transaction"):
                async with asyncio.timeout(self._config.publish_timeout_ms / 1000):
                    await producer.abort_transaction()
        except Exception as exc:  # whatever it was, a fresh producer starts clean
            log.warning(
                "relays %s: could not abort a failed transaction (%s); reconnecting",
                self.transactional_id,
                exc,
            )
            await self._discard()

    async def _discard(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await close_quietly(producer)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the task that commits the batches."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="saga-relay-transactions")

    async def close(self) -> None:
        """Stop committing (batches still waiting fail) and close the producer."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail(self._take(), TransportError("the relays are closing"))
        await self._discard()

    # -- publishing --------------------------------------------------------------------

    async def publish(
        self, shard: int, checkpoint_key: str, rows: list[OutboxRow], named: list[str]
    ) -> None:
        """Publish one lane's batch in the next shared transaction, with its checkpoint.

        Returns once the transaction committed.

        Raises:
            saga.errors.RecordRefused: Kafka refused a row of this batch.
            saga.errors.TransportError: The transaction failed or was refused (a
                rebalance); nothing of it was committed, unless the failure hid a
                commit: the lane's next checkpoint read tells.
            saga.errors.ProducerFenced: Another producer took this process's id.
        """
        if self._task is None:
            raise RuntimeError("ProcessTransactions.start() first")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Batch(shard, checkpoint_key.encode(), rows, named, done))
        self._has_pending.set()
        await done

    def _take(self) -> list[_Batch]:
        batches, self._pending = self._pending, []
        self._has_pending.clear()
        return [b for b in batches if not b.done.done()]  # a waiter that gave up

    @staticmethod
    def _fail(batches: list[_Batch], exc: BaseException) -> None:
        for batch in batches:
            if not batch.done.done():
                batch.done.set_exception(exc)

    async def _run(self) -> None:
        while True:
            await self._has_pending.wait()
            batches = self._take()
            if not batches:
                continue
            assignment = self._assignment
            lost = [b for b in batches if b.shard not in assignment.shards]
            if lost:
                self._fail(lost, TransportError("the lane is no longer assigned here"))
                batches = [b for b in batches if b.shard in assignment.shards]
            if batches:
                await self._commit(batches)

    async def _commit(self, batches: list[_Batch]) -> None:
        timeout_ms = self._config.publish_timeout_ms
        what = f"publish {sum(len(b.rows) for b in batches)} outbox rows of {len(batches)} lanes"
        ok = False
        results: list[BaseException | None] = [None] * len(batches)
        try:
            producer = await self.producer()
            with translate_kafka_errors(what):
                async with asyncio.timeout(timeout_ms / 1000):
                    await producer.begin_transaction()
                    deliveries = []
                    for batch in batches:
                        # send() only enqueues; awaiting in order keeps the id order.
                        sends = [await send_row(producer, row) for row in batch.rows]
                        sends.append(
                            await producer.send(
                                self._checkpoints,
                                encode_checkpoint(batch.named, batch.rows[-1].id, batch.shard),
                                key=batch.checkpoint_key,
                            )
                        )
                        deliveries.append(sends)
                    for index, (batch, sends) in enumerate(zip(batches, deliveries, strict=True)):
                        try:
                            await delivered(sends, batch.rows)
                        except RecordRefused as exc:
                            results[index] = exc
                        except Exception as exc:
                            results[index] = map_kafka_error(exc, what) or TransportError(
                                f"{what}: {exc!r}"
                            )
                    if any(results):
                        raise _LaneFailed()
                    if self._before_commit is not None:
                        await self._before_commit()
                    member = self._fencing_member(batches)
                    offsets: dict[TopicPartition, int] = {}
                    for sends in deliveries:
                        meta = sends[-1].result()
                        tp = TopicPartition(self._checkpoints, meta.partition)  # type: ignore[attr-defined]
                        offsets[tp] = max(offsets.get(tp, 0), meta.offset + 1)  # type: ignore[attr-defined]
                    await send_fenced_offsets(producer, offsets, member)
                    crash_if_due(self._config)
                    await producer.commit_transaction()
            ok = True
            self.transactions += 1
        except _LaneFailed:
            first = next(r for r in results if r is not None)
            for index in range(len(batches)):
                if results[index] is None:
                    results[index] = TransportError(
                        f"{what}: aborted because another lane's batch failed: {first}"
                    )
        except TimeoutError as exc:
            timed_out = TransportError(f"{what}: Kafka did not finish in {timeout_ms} ms")
            timed_out.__cause__ = exc
            results = [timed_out] * len(batches)
        except asyncio.CancelledError:
            self._fail(batches, TransportError("the relays are closing"))
            raise
        except SagaError as exc:
            results = [exc] * len(batches)
        except Exception as exc:
            results = [TransportError(f"{what}: {exc!r}")] * len(batches)
        finally:
            if not ok:
                await self._abort()
        for batch, result in zip(batches, results, strict=True):
            if batch.done.done():
                continue
            if result is None:
                batch.done.set_result(None)
            else:
                batch.done.set_exception(result)

    def _fencing_member(self, batches: list[_Batch]) -> GroupMember:
        assignment = self._assignment
        if assignment.member is None:
            raise TransportError("no group assignment yet: the relays wait for one")
        for batch in batches:
            if batch.shard not in assignment.shards:
                raise TransportError(f"lane {batch.shard} moved in a rebalance meanwhile")
        return assignment.member


class _LaneFailed(Exception):
    """One lane's records failed; every batch of the transaction fails with it."""
