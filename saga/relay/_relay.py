"""The outbox relay: publishes outbox rows to Kafka exactly once.

Theory of operation
-------------------
One relay publishes one outbox *lane* — the rows of ``(owner_topic, shard)``, owned by
one consumed topic partition — under one transactional id (``relay_id``, derived from
the lane). A process runs the relays of the partitions it owns in a
:class:`~saga.relay.RelayPool`, so the id moves with the partition and the new owner's
relay fences the old one.

1. **Connect.** Starting the transactional producer runs ``InitProducerId``, which
   fences any older producer with the same id (a zombie relay) and completes or
   aborts its open transaction. The relay then reads its last *committed* checkpoint
   record from the compacted checkpoint topic and marks the rows with those message
   ids published: that transaction reached Kafka, but the relay may have died before
   marking it. (Message ids, not outbox ids: those are reused, see ``_checkpoint``.)
2. **Publish a batch.** Read up to ``batch_size`` unpublished rows of the lane in id
   order (one short DB transaction), then in ONE Kafka transaction send them in id
   order followed by a checkpoint record (key = relay id, value = message ids), and
   commit.
3. **Mark.** Rows committed in Kafka are marked published in the database in batches:
   with the read of the next batch once ``mark_after_ms`` has passed since the oldest
   of them was committed (or ``batch_size`` of them wait), by a statement of their own
   when the relay is idle by then, and when it closes. On PostgreSQL the mark and the
   next read are ONE statement. Until they are marked, the relay's reads leave those
   rows out, and every checkpoint names them as well as its own rows, so the last
   committed checkpoint always names every row that can be committed in Kafka but
   unmarked in the database. (A mark per batch cost a database write, and a WAL
   flush, per batch: at a moderate load, one per step of every saga.)

A crash before the mark is repaired by step 1 of the next relay; a failure before the
commit aborts the transaction (a fresh producer's ``InitProducerId`` aborts it
explicitly), so the rows are sent again in a new transaction. Each outbox row thus
lands in exactly one committed Kafka transaction. Any Kafka error discards the
producer and the next attempt starts again at step 1; a fenced producer stops the
relay (another relay with the same id took over).

Refused records: Kafka can refuse one record for good (over the size limit, a topic
that does not exist). Such a row would stop its lane, since every batch starts at the
lowest unpublished id. The relay sends the rows before it, counts the refusals of the
row itself, and after ``quarantine_after_refusals`` of them (and, for a missing topic,
``quarantine_missing_topic_after_ms``) moves the row to ``saga_outbox_quarantine``
with the reason, logs an error, and goes on. An operator lists and requeues such rows
with ``saga outbox``.

Wake-ups: PostgreSQL ``NOTIFY`` naming the lane (plus a slow fallback poll), or a short
poll on SQLite. ``at_least_once`` mode skips transactions and checkpoints.

Rows handed over instead of read back: the writer that owns a lane in this process (a
participant's consumer of the commands partition) can :meth:`Relay.offer` the rows its
batch just committed, without announcing them, and the relay sends them without a read:
a database round trip and a wake-up fewer per batch. A read stays the source of truth:
the relay reads at its start, after any failure, after a notification (rows of another
writer, such as a service starting a saga), on its fallback poll and with each mark.
Offered rows are only sent from memory while no read can have returned them: every
id must be above the highest id any read returned, else the relay drops them and reads
(a read returns committed rows, and an offer comes after its commit). A read also
drops every row offered before it started: it returns them, or a later read does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from saga.errors import ProducerFenced, RecordRefused, SagaError, TransportError
from saga.kafka import (
    checkpoint_topic,
    close_quietly,
    ensure_topics,
    idempotent_producer,
    invalid_topic_name,
    topic_exists,
    transactional_producer,
    translate_kafka_errors,
)
from saga.lifecycle import AsyncResource, Clock, State, utc_now, wait_at_most
from saga.relay._checkpoint import Checkpoint, encode_checkpoint, read_last_checkpoint
from saga.relay._config import RelayConfig
from saga.relay._notify import Notifier, asyncpg_dsn
from saga.relay._outbox import OutboxRow, OutboxTable
from saga.relay._sending import crash_if_due, delivered, send_row, start_producer
from saga.relay._shared import ProcessTransactions
from saga.retry import Backoff
from saga.store import CHUNK, lane_payload, outbox_channel
from saga.topics import Topics

log = logging.getLogger("saga.relay")

_MARK_ON_CLOSE_S = 2.0
"""Longest wait, when a relay closes, for the mark of its last batch (best effort)."""


class Relay(AsyncResource):
    """Publishes the outbox rows of one shard to Kafka (see the module docstring).

    Use it as an async context manager, then either run the loop in the foreground::

        async with Relay(engine, "localhost:9092", Topics(), RelayConfig()) as relay:
            await relay.run_until_stopped()  # until relay.stop() (e.g. on SIGTERM)

    or in the background with :meth:`start` (leaving the ``async with`` block stops it),
    or drive it by hand with :meth:`publish_once` and :meth:`prune_once`.

    Args:
        engine: The store's database engine (SQLite or PostgreSQL).
        bootstrap_servers: Kafka bootstrap servers.
        topics: Topic names of the deployment (the checkpoint topic comes from here).
        config: How to publish.
        clock: Source of ``published_at`` and of the pruning cut-off.
        before_commit: Test seam (fault injection): awaited inside each Kafka
            transaction after every record is delivered and before the commit.
        listen: On PostgreSQL, LISTEN for outbox notifications itself. A
            :class:`RelayPool` turns it off and wakes its relays from one connection.
        transactions: Exactly-once only: publish through these shared transactions
            instead of a producer of the relay's own (a :class:`RelayPool` with
            ``producer_per="process"`` passes them).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        bootstrap_servers: str,
        topics: Topics,
        config: RelayConfig | None = None,
        *,
        clock: Clock = utc_now,
        before_commit: Callable[[], Awaitable[None]] | None = None,
        listen: bool = True,
        transactions: ProcessTransactions | None = None,
    ) -> None:
        self.config = config or RelayConfig()
        self._transactions = transactions if self.config.mode == "exactly_once" else None
        self._lane_epoch = 0  # of the lane in the shared transactions, at the last recovery
        self._engine = engine
        self._bootstrap = bootstrap_servers
        self._topics = topics
        self._clock = clock
        self._before_commit = before_commit
        self.relay_id = self.config.effective_relay_id
        """The transactional id (and checkpoint key) of this relay."""
        self._listen = listen
        self._outbox = OutboxTable(engine, self.config.shard, self.config.owner_topic)
        # Rows committed in Kafka that may wait for their mark: the reads leave them out
        # with an id list, which SQLite binds as parameters.
        self._most_unmarked = min(self.config.batch_size, CHUNK)
        self._state = State.UNOPENED
        self._producer: AIOKafkaProducer | None = None
        # Committed in Kafka, not yet marked in the DB: (outbox id, message id), and
        # since when (monotonic) the oldest of them waits.
        self._unmarked: list[tuple[int, str]] = []
        self._unmarked_since = 0.0
        self._recovered = Checkpoint()  # the same, as the last checkpoint names them
        # message id -> (refusals in a row, monotonic time of the first one)
        self._refusals: dict[str, tuple[int, float]] = {}
        # Single-row batches still to send to find which row the broker refused.
        self._isolating = 0
        self._lock = asyncio.Lock()  # one batch at a time
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._batch_since: float | None = None  # monotonic start of the batch under way
        # Rows handed over by the lane's writer after its commit, to send without a read
        # while no read is due (see "Rows handed over" in the module doc).
        self._offered: list[OutboxRow] = []
        self._read_due = True
        self._read_high = 0  # the highest outbox id any read returned
        # Once fenced, always fenced: reconnecting would fence the relay that took over.
        self._fenced: ProducerFenced | None = None
        self.published = 0
        """Rows this relay has committed to Kafka since it was opened."""
        self.quarantined = 0
        """Rows this relay has moved to the quarantine table since it was opened."""
        self.handed_over = 0
        """Rows this relay sent as their writer offered them, without reading them back."""

    @property
    def state(self) -> State:
        """Where the relay is in its lifecycle."""
        return self._state

    @property
    def batch_started(self) -> float | None:
        """When (``time.monotonic()``) the batch under way started; ``None`` between batches."""
        return self._batch_since

    @property
    def exactly_once(self) -> bool:
        """Whether the relay publishes in transactions with checkpoints."""
        return self.config.mode == "exactly_once"

    # -- lifecycle -------------------------------------------------------------------

    async def _open(self) -> None:
        if self._state is not State.UNOPENED:
            raise RuntimeError(f"cannot open a relay that is {self._state.value}")
        self._state = State.RUNNING

    async def _close(self, exc: BaseException | None) -> None:
        self.stop()
        try:
            if self._task is not None:
                task, self._task = self._task, None
                # Re-raise the loop's failure unless another exception is leaving already.
                if exc is None:
                    await task
                else:
                    await asyncio.gather(task, return_exceptions=True)
        finally:
            async with self._lock:
                await self._mark_before_closing()
                await self._discard_producer()
            self._state = State.CLOSED

    def start(self) -> None:
        """Run :meth:`run_until_stopped` in a background task (stopped on exit)."""
        self._require_running("start")
        if self._task is not None:
            raise RuntimeError("the relay is already started")
        self._task = asyncio.create_task(self.run_until_stopped(), name="saga-relay")

    def wake(self) -> None:
        """Look for new rows now (the outbox of this relay's lane was written)."""
        self._read_due = True
        self._wake.set()

    @property
    def takes_offers(self) -> bool:
        """Whether :meth:`offer` hands rows to a running relay (else it drops them)."""
        return self._state is State.RUNNING

    def offer(self, rows: Sequence[OutboxRow]) -> None:
        """Hand over rows of this lane that the caller has just committed, unannounced.

        The relay sends them without reading them back when it safely can, and reads
        otherwise (see the module doc), so an offer is never needed for correctness:
        a row that is not offered is read, at the latest on the fallback poll. Call it
        only after the commit returned, with the rows in id order.
        """
        if not rows or self._state is not State.RUNNING:
            return
        if len(self._offered) + len(rows) > self.config.batch_size:
            # A backlog (Kafka is down, say): a read sends it as cheaply.
            self._offered = []
            self._read_due = True
        else:
            self._offered += rows
        self._wake.set()

    def stop(self) -> None:
        """Ask the loop to finish its current batch and return. Safe to call twice."""
        if self._state is State.RUNNING:
            self._state = State.DRAINING
        self._stopping.set()
        self._wake.set()

    def _require_running(self, what: str) -> None:
        if self._state is State.UNOPENED:
            raise RuntimeError(f"{what}: open the relay first (async with Relay(...))")
        if self._state is State.CLOSED:
            raise RuntimeError(f"{what}: the relay is closed")

    # -- the loop --------------------------------------------------------------------

    async def run_until_stopped(self) -> None:
        """Publish, wait for rows, prune, until :meth:`stop` is called.

        Kafka and database outages are retried with capped exponential back-off.

        Raises:
            saga.errors.ProducerFenced: Another relay with the same id took over.
            saga.errors.SagaError: A failure that retrying cannot fix.
        """
        self._require_running("run")
        failure: SagaError | None = None
        async with asyncio.TaskGroup() as tg:
            helpers = [tg.create_task(self._prune_loop(), name="saga-relay-prune")]
            if self._listen and self._engine.dialect.name == "postgresql":
                lane = lane_payload(self.config.owner_topic, self.config.shard)
                notifier = Notifier(
                    asyncpg_dsn(self._engine.url),
                    lambda payload: self.wake() if payload in ("", lane) else None,
                    resolve_channel=lambda: outbox_channel(self._engine, self.config.owner_topic),
                    backoff_initial_s=self.config.backoff_initial_ms / 1000,
                    backoff_max_s=self.config.backoff_max_ms / 1000,
                )
                helpers.append(tg.create_task(notifier.run(), name="saga-relay-listen"))
            try:
                await self._publish_loop()
            except SagaError as exc:
                failure = exc
            finally:
                for helper in helpers:
                    helper.cancel()
        if failure is not None:
            raise failure

    async def _publish_loop(self) -> None:
        cfg = self.config
        backoff = Backoff(cfg.backoff_initial_ms / 1000, cfg.backoff_max_ms / 1000)
        is_postgres = self._engine.dialect.name == "postgresql"
        poll_s = (cfg.fallback_poll_ms if is_postgres else cfg.poll_interval_ms) / 1000
        published_at = -math.inf  # when the last non-empty batch went out (monotonic)
        while self._state is State.RUNNING:
            self._wake.clear()
            try:
                count = await self.publish_once()
            except ProducerFenced:
                log.error(
                    "relay %s was fenced: another relay with the same id took over; stopping",
                    self.relay_id,
                )
                raise
            except SagaError as exc:
                if not exc.retriable:
                    raise
                delay = backoff.next_delay()
                log.warning("relay %s: %s; retrying in %.2fs", self.relay_id, exc, delay)
                await self._sleep(delay)
                continue
            backoff.reset()
            if count >= cfg.batch_size:
                continue  # more rows are probably waiting
            if count:
                published_at = time.monotonic()
            await self._wait_for_wake(min(poll_s, self._until_mark_due()))
            # At most one transaction per linger: while rows keep coming, those written
            # meanwhile share the next one. After a quiet spell the first rows go out at
            # once; waiting would only add latency.
            gap = cfg.linger_ms / 1000 - (time.monotonic() - published_at)
            if gap > 0:
                await self._sleep(gap)

    async def _prune_loop(self) -> None:
        backoff = Backoff(self.config.backoff_initial_ms / 1000, self.config.backoff_max_ms / 1000)
        while self._state is State.RUNNING:
            try:
                await self.prune_once()
            except SagaError as exc:
                # Pruning is housekeeping: it must never stop publishing.
                log.warning("relay %s: pruning failed: %s", self.relay_id, exc)
                await self._sleep(backoff.next_delay())
                continue
            backoff.reset()
            await self._sleep(self.config.prune_every.total_seconds())

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but return at once when the relay is asked to stop."""
        await wait_at_most(self._stopping, seconds)

    async def _wait_for_wake(self, seconds: float) -> None:
        await wait_at_most(self._wake, seconds)
        if not self._wake.is_set():
            self._read_due = True  # the fallback poll, or a mark that is due

    # -- one batch -------------------------------------------------------------------

    async def publish_once(self) -> int:
        """Publish one batch of unpublished rows and mark them published.

        Connects (and recovers from the checkpoint) first if needed.

        Returns:
            The number of rows published (0 when there was nothing to do).

        Raises:
            saga.errors.ProducerFenced: Another relay with the same id took over; every
                later call raises it too.
            saga.errors.TransportError: Kafka failed; nothing was committed, or (if the
                failure hid a successful commit) the next connect recovers it.
            saga.errors.StoreError: The database failed; rows committed in Kafka stay
                remembered and are marked before the next batch is sent.
        """
        self._require_running("publish")
        async with self._lock:
            self._batch_since = time.monotonic()
            try:
                return await self._publish_batch()
            finally:
                self._batch_since = None

    async def _publish_batch(self) -> int:
        if self._fenced is not None:
            raise ProducerFenced(self._fenced.message)
        if self._recovered:
            await self._mark_unmarked()
        producer = await self._connect()
        try:
            return await self._publish_rows(producer)
        except BaseException:
            self._forget_offers()  # a read finds whatever did not go out
            raise

    async def _publish_rows(self, producer: AIOKafkaProducer) -> int:
        rows, offered = await self._next_rows()
        if not rows:
            return 0
        try:
            admitted = await self._admissible(producer, rows)
            if len(admitted) < len(rows):
                self._forget_offers()  # the rows left out are read again
            rows = admitted
            if self.exactly_once:
                await self._send_in_transaction(producer, rows)
            else:
                await self._send_idempotent(producer, rows)
        except ProducerFenced as exc:
            self._fenced = exc
            raise
        except RecordRefused as exc:
            if not exc.message_id:
                # The broker refused a whole record batch: one row of it is the
                # cause. Send the rows one at a time until that one shows itself.
                self._isolating = len(rows)
            elif await self._quarantine_if_due(rows, exc):
                self._isolating = 0
                self._wake.set()  # the rows behind it go out at once
                return 0
            raise
        if self._isolating:
            self._isolating -= 1
        if self._refusals:
            for row in rows:
                self._refusals.pop(row.message_id, None)
        if self.config.crash_after_commit:
            log.critical("crash_after_commit: killing the relay after a Kafka commit")
            os.kill(os.getpid(), signal.SIGKILL)
        self.published += len(rows)  # committed in Kafka: published, marked or not
        if offered:
            self.handed_over += len(rows)
        if not self._unmarked:
            self._unmarked_since = time.monotonic()
        self._unmarked += [(row.id, row.message_id) for row in rows]
        if self._mark_due() and not self._more_waiting(len(rows)):
            await self._mark_unmarked()
        log.debug("relay %s published %d rows", self.relay_id, len(rows))
        return len(rows)

    def _mark_due(self) -> bool:
        """Whether the rows committed in Kafka are to be marked now (see the module doc)."""
        if not self._unmarked:
            return False
        if not self.exactly_once or self._state is not State.RUNNING:
            return True  # without checkpoints only the mark says what went out
        return len(self._unmarked) >= self._most_unmarked or self._until_mark_due() == 0

    def _until_mark_due(self) -> float:
        """Seconds until the unmarked rows are due to be marked (inf without any)."""
        if not self._unmarked:
            return math.inf
        return max(0.0, self._unmarked_since + self.config.mark_after_ms / 1000 - time.monotonic())

    def _more_waiting(self, published: int) -> bool:
        """Whether the next batch is due at once (it then marks this one as it reads)."""
        return self._state is State.RUNNING and (
            self._wake.is_set() or published >= self.config.batch_size
        )

    async def _next_rows(self) -> tuple[list[OutboxRow], bool]:
        """The next rows to send, and whether they are offered ones (not read back).

        Rows offered by the lane's writer go out without a read while none is due and no
        read can have returned them (their ids are above every id read so far). The rows
        committed in Kafka before are marked on the way when due.
        """
        limit = self.config.batch_size
        mark_due = self._mark_due()
        unread = bool(self._offered) and min(r.id for r in self._offered) > self._read_high
        if unread and not self._read_due and not mark_due:
            rows, self._offered = self._offered, []
            return rows, True
        # This read returns every row offered before it started (or, if it is full, a
        # later read does): those copies are dropped. Offers made during it stay.
        self._offered = []
        self._read_due = False
        ids = [row_id for row_id, _ in self._unmarked]
        if not mark_due:
            rows = await self._outbox.fetch_unpublished(limit, excluding=ids)
        else:
            rows = await self._outbox.mark_and_fetch(ids, self._clock(), limit)
            self._unmarked = []
        if rows:
            self._read_high = max(self._read_high, rows[-1].id)
        if len(rows) >= limit:
            self._read_due = True  # more rows wait in the database
        return rows, False

    def _forget_offers(self) -> None:
        """Drop the offered rows and read next: the database has every one of them."""
        self._offered = []
        self._read_due = True

    async def _admissible(
        self, producer: AIOKafkaProducer, rows: list[OutboxRow]
    ) -> list[OutboxRow]:
        """The rows to send now: those before the first row Kafka is known to refuse.

        Raises:
            saga.errors.RecordRefused: The first row itself is for a topic that does
                not exist.
        """
        if self._isolating:
            rows = rows[:1]
        for index, row in enumerate(rows):
            if index and row.message_id in self._refusals:
                return rows[:index]  # the rows before a refused one need not wait
            if (invalid := invalid_topic_name(row.topic)) is not None:
                if index:
                    return rows[:index]
                raise RecordRefused(
                    f"outbox row {row.id} (message {row.message_id}): {invalid}",
                    message_id=row.message_id,
                    lasting=True,
                )
            if not await topic_exists(producer, row.topic):
                if index:
                    return rows[:index]
                raise RecordRefused(
                    f"topic {row.topic} does not exist (outbox row {row.id}, message"
                    f" {row.message_id}); create it or fix the definition that names it",
                    message_id=row.message_id,
                    lasting=False,
                )
        return rows

    async def _quarantine_if_due(self, rows: list[OutboxRow], refused: RecordRefused) -> bool:
        """Count a refusal of one row; move the row to quarantine once it is due.

        Returns:
            Whether the row was moved (the lane can go on at once).
        """
        message_id = refused.message_id or ""
        count, since = self._refusals.get(message_id, (0, time.monotonic()))
        count += 1
        self._refusals[message_id] = (count, since)
        cfg = self.config
        waited_ms = (time.monotonic() - since) * 1000
        if count < cfg.quarantine_after_refusals or (
            not refused.lasting and waited_ms < cfg.quarantine_missing_topic_after_ms
        ):
            return False
        row = next(r for r in rows if r.message_id == message_id)
        moved = await self._outbox.quarantine(row.id, refused.message, count, self._clock())
        del self._refusals[message_id]
        if moved:
            self.quarantined += 1
            log.error(
                "relay %s: Kafka refused message %s (topic %s) %d times; moved it to the"
                " outbox quarantine so that the rows behind it are published. Reason: %s."
                " Fix the cause, then `saga outbox requeue %s` sends it again.",
                self.relay_id,
                message_id,
                row.topic,
                count,
                refused.message,
                message_id,
            )
        return True

    async def _mark_unmarked(self) -> None:
        if self._recovered:
            now = self._clock()
            await self._outbox.mark_published_messages(self._recovered.message_ids, now)
            # Written by a relay of an earlier release, which named rows by outbox id.
            await self._outbox.mark_published(self._recovered.legacy_ids, now)
            self._recovered = Checkpoint()
        if self._unmarked:
            await self._outbox.mark_published([i for i, _ in self._unmarked], self._clock())
            self._unmarked = []

    async def _mark_before_closing(self) -> None:
        """Mark the last batch if its mark waited for a next read that never came.

        Best effort: rows left unmarked are named by the last checkpoint, and the next
        relay of the lane marks them when it starts.
        """
        if not self._unmarked:
            return
        try:
            async with asyncio.timeout(_MARK_ON_CLOSE_S):  # a dead database must not hold a stop
                await self._mark_unmarked()
        except (SagaError, TimeoutError) as exc:
            log.warning(
                "relay %s: could not mark its last %d rows published (%s); the next relay"
                " of the lane marks them from the checkpoint",
                self.relay_id,
                len(self._unmarked),
                str(exc) or f"no answer in {_MARK_ON_CLOSE_S:g} s",
            )

    async def _send_in_transaction(self, producer: AIOKafkaProducer, rows: list[OutboxRow]) -> None:
        ids = [row.id for row in rows]
        # The checkpoint names this batch and every row still unmarked before it.
        named = [m for _, m in self._unmarked] + [row.message_id for row in rows]
        ok = False
        try:
            if self._transactions is not None:
                await self._transactions.publish(
                    self.config.shard, self._lane_epoch, self.relay_id, rows, named
                )
            else:
                async with self._publish_deadline(f"publish outbox rows {ids[0]}..{ids[-1]}"):
                    await producer.begin_transaction()
                    # send() only enqueues; awaiting in order keeps the id order per partition.
                    deliveries = [await send_row(producer, row) for row in rows]
                    deliveries.append(
                        await producer.send(
                            self._topics.checkpoints,
                            encode_checkpoint(named, ids[-1], self.config.shard),
                            key=self.relay_id.encode(),
                        )
                    )
                    await delivered(deliveries, rows)
                    if self._before_commit is not None:
                        await self._before_commit()
                    crash_if_due(self.config)
                    await producer.commit_transaction()
            ok = True
        finally:
            if not ok:
                # A fresh producer aborts this transaction (InitProducerId) and recovers;
                # after a shared transaction, the checkpoint read tells what committed.
                await self._discard_producer()

    async def _send_idempotent(self, producer: AIOKafkaProducer, rows: list[OutboxRow]) -> None:
        ok = False
        try:
            async with self._publish_deadline(f"publish outbox rows {rows[0].id}..{rows[-1].id}"):
                deliveries = [await send_row(producer, row) for row in rows]
                await delivered(deliveries, rows)
            ok = True
        finally:
            if not ok:
                await self._discard_producer()

    @contextlib.asynccontextmanager
    async def _publish_deadline(self, what: str) -> AsyncIterator[None]:
        """Translate Kafka errors, and give up after ``publish_timeout_ms``.

        Raises:
            saga.errors.TransportError: Kafka failed, or did not finish in time (a
                broker that died or froze mid-transaction can leave the client waiting
                for ever).
        """
        timeout_ms = self.config.publish_timeout_ms
        try:
            with translate_kafka_errors(what):
                async with asyncio.timeout(timeout_ms / 1000):
                    yield
        except TimeoutError as exc:
            raise TransportError(f"{what}: Kafka did not finish in {timeout_ms} ms") from exc

    # -- connecting and recovery -----------------------------------------------------

    async def _connect(self) -> AIOKafkaProducer:
        if self._producer is not None:
            if self._transactions is not None:
                # The shared producer is replaced after a failed transaction or when
                # the lowest lane moves; a replaced one is closed, and asking a closed
                # client for metadata waits for ever.
                return await self._transactions.producer()
            return self._producer
        cfg = self.config
        if not self.exactly_once:
            producer = idempotent_producer(self._bootstrap)
            await self._start_producer(producer)
            self._producer = producer
            return producer
        await ensure_topics(
            self._bootstrap,
            [checkpoint_topic(self._topics, replication_factor=cfg.checkpoint_replication_factor)],
        )
        if self._transactions is not None:
            # Zombies of the lane are fenced by the group generation, and by its id;
            # the checkpoint read below waits for any transaction of theirs that could
            # still commit.
            self._lane_epoch = await self._transactions.recover_lane(cfg.shard)
            producer = await self._transactions.producer()
            own = False
        else:
            producer = transactional_producer(
                self._bootstrap, self.relay_id, transaction_timeout_ms=cfg.transaction_timeout_ms
            )
            # start() runs InitProducerId: zombies are fenced and their open transaction is
            # finished before we read the checkpoint, so the checkpoint is final.
            await self._start_producer(producer)
            own = True
        try:
            with translate_kafka_errors("checkpoint topic metadata"):
                partitions = await producer.partitions_for(self._topics.checkpoints)
            checkpoint = await read_last_checkpoint(
                self._bootstrap,
                self._topics.checkpoints,
                partitions,
                self.relay_id,
                timeout_s=cfg.transaction_timeout_ms / 1000 + 30,
            )
        except BaseException:
            if own:
                await close_quietly(producer)
            raise
        self._producer = producer
        if checkpoint:
            log.info(
                "relay %s recovered its last checkpoint: %d messages are published",
                self.relay_id,
                len(checkpoint.message_ids or checkpoint.legacy_ids),
            )
            # Kept until marked: a database error here is retried before the next batch.
            self._recovered = checkpoint
            await self._mark_unmarked()
        return producer

    async def _start_producer(self, producer: AIOKafkaProducer) -> None:
        await start_producer(
            producer, f"connect relay {self.relay_id}", self.config.connect_timeout_ms
        )

    async def _discard_producer(self) -> None:
        """Drop the producer: the next batch connects and reads the checkpoint again."""
        producer, self._producer = self._producer, None
        if producer is not None and self._transactions is None:
            await close_quietly(producer)

    # -- pruning ---------------------------------------------------------------------

    async def prune_once(self) -> int:
        """Delete this shard's rows published longer than ``prune_after`` ago.

        Deletes in batches of ``prune_batch_size`` rows (one statement each) until
        none are left.

        Returns:
            The number of rows deleted.
        """
        self._require_running("prune")
        cutoff = self._clock() - self.config.prune_after
        total = 0
        while True:
            deleted = await self._outbox.prune(cutoff, self.config.prune_batch_size)
            total += deleted
            if deleted < self.config.prune_batch_size:
                break
        if total:
            log.info("relay %s pruned %d published outbox rows", self.relay_id, total)
        return total
