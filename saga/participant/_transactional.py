"""Transactional mode (exactly once): one database transaction per batch.

The transaction (a) inserts the batch's message ids into the inbox (``saga_inbox``) and
skips those that were there already, (b) runs each new command's handler with the
transaction's connection, (c) writes the replies and dead letters into the outbox
(``saga_outbox``), and (d) stores the next offsets in ``saga_consumer_offsets``,
fenced by the epoch with which this replica claimed each partition
(:class:`saga.partitions.PartitionConsumer`, the coordinator's way of consuming too).

A batch first runs without a savepoint per command: two round trips per command
fewer, and most batches have no failing handler. When a handler raises (or the
transaction fails in any way), everything is rolled back and the batch runs again with
each handler in its own savepoint, so a failing handler undoes only its own writes and
still gets a failure reply. Running a handler again after a rollback is nothing new
for it: a crash or a rebalance does the same. A crash anywhere replays at most the
uncommitted batch, whose effects were rolled back.

Kafka's group offsets are committed afterwards, best effort and at most every
``lag_commit_interval_ms``, for lag monitoring only: they are not the source of truth.
Each reply goes to the outbox lane of the commands partition it answers, and while the
participant runs, the replica runs one exactly-once relay per partition it owns
(:class:`saga.relay.RelayPool`) under that partition's own transactional id: any
number of replicas, and any number of participants on one database, publish every
reply once with nothing configured.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from saga.errors import PartitionFenced, StoreError
from saga.kafka import GroupMember, topic_partitions
from saga.participant import _db
from saga.participant._decoding import Decoded, command_ids
from saga.participant._handling import Isolate
from saga.participant._mode import BatchMode, ModeParts
from saga.partitions import PartitionConsumer
from saga.relay import RelayPool

log = logging.getLogger("saga.participant")


class TransactionalMode(BatchMode):
    """Consumes through a :class:`PartitionConsumer`; replies go through the outbox."""

    def __init__(
        self,
        parts: ModeParts,
        engine: AsyncEngine,
        *,
        on_relay_failure: Callable[[BaseException], None],
    ) -> None:
        super().__init__(parts)
        self._engine = engine
        self._on_relay_failure = on_relay_failure
        self._owned: PartitionConsumer | None = None
        self.partitions = 0
        """Once open: partitions of the commands topic."""
        self.relays: RelayPool | None = None
        """While running: the relays of the owned partitions."""
        self._lag_offsets: dict[int, int] = {}
        self._lag_committed_at = 0.0

    @property
    def joined(self) -> bool:
        """Whether the group assigned this replica its partitions at least once."""
        return self._owned is not None and self._owned.rebalances > 0

    @property
    def group_consumer(self) -> Any:
        """The Kafka consumer whose group offsets are committed (for lag monitoring)."""
        return self._owned.kafka if self._owned is not None else None

    @property
    def epochs(self) -> Mapping[int, int]:
        """``partition -> epoch`` of the partitions owned now."""
        return self._owned.epochs if self._owned is not None else {}

    async def start(self) -> None:
        """Start consuming (the caller stops on failure)."""
        cfg = self._config
        self.partitions = len(await topic_partitions(cfg.bootstrap_servers, [cfg.commands_topic]))
        self._owned = PartitionConsumer(
            self._engine,
            bootstrap_servers=cfg.bootstrap_servers,
            topic=cfg.commands_topic,
            group_id=cfg.effective_group_id,
            max_batch=cfg.max_batch,
            on_assignment=self._follow,
        )
        await self._owned.start()

    async def stop(self) -> None:
        """Stop consuming (idempotent)."""
        owned, self._owned = self._owned, None
        if owned is not None:
            await owned.stop()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the relays of the owned partitions; on a normal exit, commit the lag."""
        assert self._owned is not None
        cfg = self._config
        pool = RelayPool(
            self._engine,
            cfg.bootstrap_servers,
            cfg.topics,
            cfg.commands_topic,
            cfg.relay,
            on_failure=self._on_relay_failure,
        )
        async with pool:
            self.relays = pool
            pool.follow(self._owned.assignment, self._owned.group_member)
            try:
                yield
                await self._commit_lag_offsets()
            finally:
                self.relays = None

    async def round(self) -> None:
        """Poll once and handle what came."""
        owned = self._owned
        assert owned is not None
        polled = await owned.poll(self._config.poll_timeout_ms)
        if not polled:
            return
        await owned.handle(polled, self._process_batch)

    def _follow(self, partitions: frozenset[int], member: GroupMember | None) -> None:
        if self.relays is not None:
            self.relays.follow(partitions, member)

    async def _process_batch(self, batch: Mapping[int, Sequence[Any]]) -> None:
        items, next_offsets = self._decode_batch(batch)
        try:
            await self._commit_batch(items, next_offsets, isolate=False)
        except PartitionFenced:
            raise
        except (Isolate, StoreError) as exc:
            cause = exc.__cause__ if isinstance(exc, Isolate) else exc
            log.debug("%s: batch redone with a savepoint per command: %r", self._name, cause)
            await self._commit_batch(items, next_offsets, isolate=True)
        self._lag_offsets.update(next_offsets)
        interval_s = self._config.lag_commit_interval_ms / 1000
        if time.monotonic() - self._lag_committed_at >= interval_s:
            await self._commit_lag_offsets()

    async def _commit_batch(
        self, items: Sequence[Decoded], next_offsets: Mapping[int, int], *, isolate: bool
    ) -> None:
        relays = self.relays
        handed_over: set[int] = set()  # lanes whose rows go to their relay unannounced
        try:
            with _db.translate_db_errors(f"{self._name}: commit a batch"):
                async with self._engine.begin() as conn:
                    # Claimed up front: the inbox rows commit (or roll back) with the batch.
                    ids = command_ids(items)
                    seen = set(ids) - await _db.claim_message_ids(conn, ids)
                    _, outgoing = await self._runner.handle_batch(
                        items, seen, conn, isolate=isolate
                    )
                    assert self._owned is not None
                    shards = {record.shard for record in outgoing}
                    if relays is not None and relays.takes_offers(shards):
                        handed_over = shards
                    lanes = await _db.write_outbox(
                        conn,
                        list(outgoing),
                        owner_topic=self._config.commands_topic,
                        offsets=self._owned.offset_commit(next_offsets),
                        announce=not handed_over,
                    )
        except BaseException:
            if relays is not None and handed_over:
                relays.read(handed_over)  # the commit may have happened all the same
            raise
        if relays is not None and handed_over:
            # Committed: the relays send these rows without reading them back.
            relays.offer(lanes)

    async def _commit_lag_offsets(self) -> None:
        """Commit the offsets of the batches handled since the last lag commit."""
        offsets, self._lag_offsets = self._lag_offsets, {}
        self._lag_committed_at = time.monotonic()
        if offsets:
            await self._commit_offsets(offsets)
