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
* **Fencing by generation** (as Kafka Streams does since KIP-447). Every transaction
  commits, after all of its records are acknowledged and before it commits, an offset
  of the group whose assignment gave this process its lanes, naming the member and
  generation of that assignment (:func:`saga.kafka.send_fenced_offsets`). The group
  coordinator refuses it once the group has rebalanced, and the transaction aborts.
  Every lane of a transaction must be in the assignment whose generation it names
  (checked right before the offsets go).
* **Why the new owner sees every committed batch.** A lane's new owner starts after
  the rebalance, and reads the checkpoint topic up to the high watermark it sees then
  (``read_last_checkpoint``), waiting for every transaction open below it. A zombie
  transaction that could still commit had its offsets accepted before the rebalance,
  so its checkpoint records, acknowledged before that, lie below that watermark: the
  new owner waits for it and sees its checkpoint if it commits. A zombie transaction
  whose offsets come later is refused and aborts.
* **Fencing by id, for liveness.** The producer's transactional id is the lane id
  (``<owner_topic>.relay.<shard>``, as a per-lane relay's) of the lowest partition
  assigned here, and on every assignment the ids of the other partitions gained are
  fenced once (a producer started and stopped under each). So whoever published a
  gained lane before, under its own lowest partition's id or under a per-lane
  relay's, has its open transaction aborted at once: a process killed mid-transaction
  does not hold up its partitions' readers until ``transaction_timeout_ms``. This also
  makes lane and process producers safe together in one deployment (a rolling change
  of ``producer_per``). A slow process that still uses an id a new owner took is
  fenced, waits a moment (or for its next assignment) and reconnects.

The offset committed is 0 on the one partition of the fence topic (``Topics.fences``),
which nothing writes to: it fences and otherwise means nothing, and the group shows no
lag on it. (Until this release it was the checkpoint partition's next offset, so an
idle process's group showed a lag there that grew with every other relay's checkpoint
and set off lag alerts. The generation check does not depend on which offset goes, so
processes of both releases fence each other alike.)

Costs. Any failure fails every batch of the transaction; their relays then read their
checkpoints again and retry, as after a failure of their own. A rebalance fails the
transaction in flight (its generation is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from saga.errors import ProducerFenced, RecordRefused, SagaError, TransportError
from saga.kafka import (
    GroupMember,
    close_quietly,
    ensure_topics,
    fence_topic,
    install_group_fencing,
    map_kafka_error,
    send_fenced_offsets,
    transactional_producer,
    translate_kafka_errors,
)
from saga.relay._checkpoint import encode_checkpoint
from saga.relay._config import RelayConfig, relay_id_for
from saga.relay._outbox import OutboxRow
from saga.relay._sending import crash_if_due, delivered, send_row, start_producer
from saga.topics import Topics

log = logging.getLogger("saga.relay")

FENCED_PAUSE_S = 2.0
"""How long fenced shared transactions wait before they connect again (same assignment)."""


@dataclasses.dataclass(slots=True)
class _Batch:
    shard: int
    epoch: int  # the lane's epoch when its relay last read its checkpoint
    checkpoint_key: bytes
    rows: list[OutboxRow]
    named: list[str]  # message ids the lane's checkpoint names
    done: asyncio.Future[None]


@dataclasses.dataclass(frozen=True, slots=True)
class _Assignment:
    member: GroupMember | None
    shards: frozenset[int]


class ProcessTransactions:
    """The one transactional producer of a pool's lanes (see the module docstring).

    Args:
        bootstrap_servers: Kafka bootstrap servers.
        topics: The deployment's topics: the lanes' checkpoint records go to
            ``topics.checkpoints``, the fencing offset to ``topics.fences``.
        owner_topic: The topic whose partitions own the lanes (the ids derive from it).
        config: The relays' options (timeouts, fault injection).
        before_commit: Test seam: awaited in each transaction before the offsets go.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Topics,
        owner_topic: str,
        config: RelayConfig,
        *,
        before_commit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._checkpoints = topics.checkpoints
        self._fence = TopicPartition(topics.fences, 0)
        self._fence_spec = fence_topic(
            topics, replication_factor=config.checkpoint_replication_factor
        )
        self._fence_exists = False
        self._owner_topic = owner_topic
        self._config = config
        self._before_commit = before_commit
        self._assignment = _Assignment(None, frozenset())
        self._follows = 0  # assignments followed so far
        # Each lane's epoch goes up whenever it is gained here; a batch prepared by a
        # relay that recovered at an older epoch is refused (it must read its
        # checkpoint again: someone else may have published the lane meanwhile).
        self._lane_epochs: dict[int, int] = {}
        self._epoch_counter = 0
        self._fences: dict[int, asyncio.Task[None]] = {}  # gained lanes' id fences
        self._reinit = False  # the lowest lane was gained: start the producer again
        self._pending: list[_Batch] = []
        self._in_flight = 0
        self._has_pending = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._producer_id = ""  # the transactional id self._producer started with
        self._fenced: tuple[float, int] | None = None  # (monotonic time, follows) of a fence
        self._txn_lock = asyncio.Lock()  # held by a transaction, and by a producer start
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0
        """Kafka transactions committed since this object was made."""

    # -- ownership ---------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Lane batches waiting for the next transaction."""
        return len(self._pending)

    @property
    def in_transaction(self) -> int:
        """Lane batches in the transaction under way (0 between transactions)."""
        return self._in_flight

    @property
    def transactional_id(self) -> str | None:
        """The id to publish under: the lane id of the lowest partition assigned here."""
        shards = self._assignment.shards
        return relay_id_for(self._owner_topic, min(shards)) if shards else None

    def follow(self, shards: frozenset[int], member: GroupMember | None) -> None:
        """Publish for ``shards`` under ``member``'s generation from now on.

        A lane counts as *gained* unless this member held it in the assignment just
        before (the previous generation, same member id): after a missed generation,
        someone else may have owned it. The id of every gained lane is fenced before
        its relay reads its checkpoint: by the producer's own start for the lowest
        lane, by a producer started and stopped under it for the others (in the
        background, from now on). Whoever published under it before, dead or alive, has
        its open transaction aborted.
        """
        before = self._assignment
        continuous = (
            before.member is not None
            and member is not None
            and member.member_id == before.member.member_id
            and member.generation == before.member.generation + 1
        )
        gained = shards - before.shards if continuous else shards
        self._assignment = _Assignment(member, shards)
        self._follows += 1
        for shard in set(self._lane_epochs) - shards:
            del self._lane_epochs[shard]
        for shard in set(self._fences) - shards:
            self._fences.pop(shard).cancel()  # its new owner fences it
        for shard in sorted(gained):
            self._epoch_counter += 1
            self._lane_epochs[shard] = self._epoch_counter
            fence = self._fences.pop(shard, None)
            if fence is not None:
                fence.cancel()
            if shard == min(shards):
                self._reinit = True  # the producer's own start fences its id
            else:
                self._start_fence(shard)

    def _start_fence(self, shard: int) -> None:
        fence = asyncio.create_task(
            self._fence_lane(shard), name=f"saga-relay-fence-{self._owner_topic}[{shard}]"
        )
        # Retrieved here, so that a failed fence nobody waits for (its lane moved on) is
        # not reported as an exception never retrieved; recover_lane reads it.
        fence.add_done_callback(lambda task: task.cancelled() or task.exception())
        self._fences[shard] = fence

    async def recover_lane(self, shard: int) -> int:
        """Make sure the lane's id is fenced; call it before reading the lane's checkpoint.

        Returns:
            The lane's epoch, to pass to :meth:`publish` with every batch.

        Raises:
            saga.errors.TransportError: The lane is not assigned here, or Kafka failed
                (the relay retries).
        """
        if shard not in self._lane_epochs:
            raise TransportError(f"lane {shard} is not assigned here")
        async with self._txn_lock:
            await self._ensure_producer()  # fences the lowest lane's id, if need be
        # A rebalance meanwhile may replace the fence (the lane was gained again): wait
        # for the latest. ``asyncio.wait`` neither passes a replaced fence's
        # cancellation on to this relay nor cancels the fence if this relay stops.
        while (fence := self._fences.get(shard)) is not None and not fence.done():
            await asyncio.wait([fence])
        if fence is not None and (fence.cancelled() or fence.exception() is not None):
            failure = "cancelled" if fence.cancelled() else str(fence.exception())
            if self._task is None:
                raise TransportError("the relays are closing")
            self._start_fence(shard)
            raise TransportError(f"fence lane {shard}: {failure}")
        epoch = self._lane_epochs.get(shard)
        if epoch is None:
            raise TransportError(f"lane {shard} moved while its id was fenced")
        log.debug("relays %s: lane %d recovered at epoch %d", self._owner_topic, shard, epoch)
        return epoch

    async def _fence_lane(self, shard: int) -> None:
        """Start and stop a producer under a lane's id: ``InitProducerId`` is the fence.

        Raises:
            saga.errors.TransportError: Kafka failed.
        """
        lane_id = relay_id_for(self._owner_topic, shard)
        producer = transactional_producer(
            self._bootstrap, lane_id, transaction_timeout_ms=self._config.transaction_timeout_ms
        )
        try:
            await start_producer(producer, f"fence {lane_id}", self._config.connect_timeout_ms)
        finally:
            await close_quietly(producer)

    # -- the producer ------------------------------------------------------------------

    async def producer(self) -> AIOKafkaProducer:
        """The started producer (for metadata), connected if need be."""
        if self._producer is not None:
            return self._producer
        async with self._txn_lock:
            return await self._ensure_producer()

    async def _ensure_producer(self) -> AIOKafkaProducer:
        """Connect under the id of the lowest lane (with the transaction lock held).

        Connecting runs ``InitProducerId``: an open transaction of an earlier producer
        with that id is finished or aborted first.
        """
        wanted = self.transactional_id
        if self._producer is not None and (self._reinit or self._producer_id != wanted):
            await self._discard()  # the lowest lane was gained, or changed
        if self._producer is not None:
            return self._producer
        if wanted is None:
            raise TransportError("no partition is assigned here yet")
        if self._fenced is not None:
            since, follows = self._fenced
            if follows == self._follows and time.monotonic() - since < FENCED_PAUSE_S:
                raise TransportError(
                    f"relays {wanted} were fenced by another owner of the partition;"
                    " waiting for the next assignment"
                )
            self._fenced = None
        if not self._fence_exists:  # a deployment set up before the fence topic came
            try:
                async with asyncio.timeout(self._config.connect_timeout_ms / 1000):
                    await ensure_topics(self._bootstrap, [self._fence_spec])
            except (TimeoutError, SagaError) as exc:
                why = exc.message if isinstance(exc, SagaError) else "timed out"
                raise TransportError(
                    f"create the fence topic {self._fence.topic}: {why}; if Kafka refuses,"
                    " create it with `saga admin topics` (a user that may create topics)"
                ) from exc
            self._fence_exists = True
        producer = transactional_producer(
            self._bootstrap, wanted, transaction_timeout_ms=self._config.transaction_timeout_ms
        )
        install_group_fencing(producer)
        await start_producer(producer, f"connect relays {wanted}", self._config.connect_timeout_ms)
        self._producer, self._producer_id, self._reinit = producer, wanted, False
        return producer

    async def _abort(self) -> None:
        """End a failed transaction now (with the transaction lock held).

        An explicit abort lets the lanes' readers (and new owners' checkpoint reads) go
        on at once, instead of after ``transaction_timeout_ms``.
        """
        producer = self._producer
        if producer is None:
            return
        txn: Any = producer._txn_manager
        if txn.is_in_transaction() and (txn.txn_partitions or txn._txn_consumer_group):
            try:
                with translate_kafka_errors("abort the relays' transaction"):
                    async with asyncio.timeout(self._config.publish_timeout_ms / 1000):
                        await producer.abort_transaction()
                return
            except Exception as exc:  # whatever it was, a fresh producer starts clean
                log.warning(
                    "relays %s: could not abort a failed transaction (%s %s); reconnecting",
                    self._producer_id,
                    type(exc).__name__,
                    exc,
                )
        # The client cannot abort it (after some errors it forgets what the transaction
        # wrote and would send no EndTxn): InitProducerId of the same id does, at once.
        await self._discard()
        try:
            await self._ensure_producer()
        except SagaError as exc:
            log.warning("relays: could not reconnect after a failed transaction: %s", exc)

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
        for pending in [*self._fences.values(), *([task] if task is not None else [])]:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
        self._fail(self._take(), TransportError("the relays are closing"))
        await self._discard()

    # -- publishing --------------------------------------------------------------------

    async def publish(
        self, shard: int, epoch: int, checkpoint_key: str, rows: list[OutboxRow], named: list[str]
    ) -> None:
        """Publish one lane's batch in the next shared transaction, with its checkpoint.

        ``epoch`` is what :meth:`recover_lane` returned when the relay last read the
        lane's checkpoint; a batch of an older epoch is refused.

        Returns once the transaction committed.

        Raises:
            saga.errors.RecordRefused: Kafka refused a row of this batch.
            saga.errors.TransportError: The transaction failed or was refused (a
                rebalance); nothing of it was committed, unless the failure hid a
                commit: the lane's next checkpoint read tells. (A fence of this
                process's id, by a new owner of its lowest partition, comes as one too.)
        """
        if self._task is None:
            raise RuntimeError("ProcessTransactions.start() first")
        if self._task.done():  # only a bug ends it: stop loudly rather than wait forever
            raise RuntimeError(f"the relays' shared transactions ended: {self._task!r}")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Batch(shard, epoch, checkpoint_key.encode(), rows, named, done))
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
        linger_s = self._config.linger_ms / 1000
        ended = -math.inf  # when the last transaction ended (monotonic)
        while True:
            await self._has_pending.wait()
            # At most one transaction per linger, as a lane's relay does: the batches of
            # other lanes that come meanwhile share it. After a quiet spell the first
            # batch goes at once.
            gap = linger_s - (time.monotonic() - ended)
            if gap > 0:
                await asyncio.sleep(gap)
            batches = self._take()
            if not batches:
                continue
            stale = [b for b in batches if not self._current(b)]
            if stale:
                self._fail(stale, _stale())
                batches = [b for b in batches if self._current(b)]
            if batches:
                try:
                    await self._commit(batches)
                except asyncio.CancelledError:
                    if _cancelled_from_outside():
                        raise
                    # A stray CancelledError of the Kafka client (translate_kafka_errors
                    # turns those of its operations into TransportError; this is the
                    # backstop): the batches failed, and ending here would leave every
                    # lane waiting for ever.
                    log.warning("relays: the Kafka client cancelled a shared transaction")
                except Exception as exc:  # a bug here must not leave the lanes waiting
                    log.exception("relays: a shared transaction failed unexpectedly")
                    self._fail(batches, TransportError(f"shared transaction failed: {exc!r}"))
                ended = time.monotonic()

    async def _commit(self, batches: list[_Batch]) -> None:
        async with self._txn_lock:
            self._in_flight = len(batches)
            try:
                await self._commit_locked(batches)
            finally:
                self._in_flight = 0

    async def _commit_locked(self, batches: list[_Batch]) -> None:
        timeout_ms = self._config.publish_timeout_ms
        what = f"publish {sum(len(b.rows) for b in batches)} outbox rows of {len(batches)} lanes"
        ok = False
        results: list[BaseException | None] = [None] * len(batches)
        try:
            producer = await self._ensure_producer()
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
                    await send_fenced_offsets(producer, {self._fence: 0}, member)
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
        except ProducerFenced as exc:
            # A new owner of our lowest partition (or a zombie that still thinks it is
            # one) took the id. Wait for the next assignment, or a pause, then reconnect.
            self._fenced = (time.monotonic(), self._follows)
            moved = TransportError(f"{what}: {exc}; publishing again after a pause")
            results = [moved] * len(batches)
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

    def _current(self, batch: _Batch) -> bool:
        """Whether the batch's lane is still assigned here, since its relay recovered."""
        return self._lane_epochs.get(batch.shard) == batch.epoch

    def _fencing_member(self, batches: list[_Batch]) -> GroupMember:
        member = self._assignment.member
        if member is None:
            raise TransportError("no group assignment yet: the relays wait for one")
        if not all(self._current(b) for b in batches):
            raise _stale()
        return member


def _cancelled_from_outside() -> bool:
    """Whether the current task is being cancelled (not hit by a stray CancelledError)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _stale() -> TransportError:
    return TransportError(
        "the lane moved in a rebalance since its relay read its checkpoint; it reads it again"
    )


class _LaneFailed(Exception):
    """One lane's records failed; every batch of the transaction fails with it."""
