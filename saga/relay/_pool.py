"""The relays of the partitions a process owns, started and stopped as ownership moves.

Theory of operation
-------------------
An outbox row belongs to a *lane*: ``(owner_topic, shard)``, the consumed topic
partition whose owner publishes it (a saga's home partition of the replies topic for
the coordinator's rows; the command's partition of ``<name>.commands`` for a
participant's). A :class:`RelayPool` runs one :class:`~saga.relay.Relay` per partition
this process is assigned, each under the lane's own transactional id
(``<owner_topic>.relay.<shard>``, as Kafka Streams gives each task its own producer):

* when a partition is assigned here, its relay starts: ``InitProducerId`` fences the
  previous owner's relay and finishes or aborts its open transaction, the checkpoint
  says which rows that relay committed, and publishing goes on from there;
* when a partition goes elsewhere, its relay finishes its batch and stops; if it is
  slower than the new owner, the new owner's relay fences it, and a fenced relay of a
  pool stops too (it is no failure: the partition moved). Should the partition still
  be assigned here after a short pause, the relay starts again and fences the other.
  A partition that comes back while its old relay is still stopping gets a new relay
  at once, which fences the old one the same way.

A relay retries Kafka and database outages itself. One that still ends on a transient
error (a ``CancelledError`` the Kafka client let out of its own operations when a
connection died, say) is started again after a back-off. Any other failure of a relay
(one that retrying cannot fix) is handed to ``on_failure``: the process that owns the
pool stops loudly rather than keep consuming while nobody publishes. On PostgreSQL the
pool keeps one LISTEN connection and wakes only the relay of the lane a notification
names.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from saga.errors import ProducerFenced, SagaError, TransportError
from saga.kafka import GroupMember
from saga.lifecycle import AsyncResource, awaiting, cancel_and_wait
from saga.relay._config import RelayConfig
from saga.relay._notify import Notifier, asyncpg_dsn
from saga.relay._outbox import OutboxRow
from saga.relay._relay import Relay
from saga.relay._shared import ProcessTransactions
from saga.retry import Backoff
from saga.store import lane_payload, outbox_channel
from saga.topics import Topics

log = logging.getLogger("saga.relay")

FENCED_PAUSE_S = 2.0
"""How long a fenced relay waits before it starts again, if its partition is still ours."""


class RelayPool(AsyncResource):
    """One relay per owned partition of ``owner_topic``; an async context manager.

    Args:
        engine: The database whose outbox the relays publish.
        bootstrap_servers: Kafka bootstrap servers.
        topics: Topic names (the checkpoint topic comes from here).
        owner_topic: The consumed topic whose partitions own the outbox lanes.
        config: Options of every relay (``owner_topic``, ``shard`` and ``relay_id`` are
            set per partition).
        on_failure: Called with the error of a relay that failed for good.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        bootstrap_servers: str,
        topics: Topics,
        owner_topic: str,
        config: RelayConfig | None = None,
        *,
        on_failure: Callable[[BaseException], None],
    ) -> None:
        self._engine = engine
        self._bootstrap = bootstrap_servers
        self._topics = topics
        self.owner_topic = owner_topic
        self._config = config or RelayConfig()
        self._on_failure = on_failure
        self._relays: dict[int, Relay] = {}  # the current relay of each followed partition
        self._tasks: dict[int, asyncio.Task[None]] = {}  # each followed partition's supervisor
        self._stopping: set[asyncio.Task[None]] = set()  # supervisors of partitions let go
        self._notifier: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._transactions: ProcessTransactions | None = None
        self._closed = False
        self._published_before = 0
        self.restarts = 0
        """Relays restarted after a transient failure (a stray error of the Kafka client)."""

    @property
    def shards(self) -> frozenset[int]:
        """The partitions whose relays run now."""
        return frozenset(self._tasks)

    @property
    def relays(self) -> dict[int, Relay]:
        """``partition -> relay`` of the relays running now."""
        return dict(self._relays)

    @property
    def published(self) -> int:
        """Rows the pool's relays committed to Kafka since the pool was opened."""
        return self._published_before + sum(r.published for r in self._relays.values())

    async def _open(self) -> None:
        cfg = self._config
        if cfg.mode == "exactly_once" and cfg.producer_per == "process":
            self._transactions = ProcessTransactions(
                self._bootstrap, self._topics, self.owner_topic, cfg
            )
            self._transactions.start()
        if self._engine.dialect.name == "postgresql":
            notifier = Notifier(
                asyncpg_dsn(self._engine.url),
                self._wake,
                resolve_channel=lambda: outbox_channel(self._engine, self.owner_topic),
                backoff_initial_s=self._config.backoff_initial_ms / 1000,
                backoff_max_s=self._config.backoff_max_ms / 1000,
            )
            self._notifier = asyncio.create_task(notifier.run(), name="saga-relay-listen")
        self._watch = asyncio.create_task(self._watch_for_stalls(), name="saga-relay-watch")

    async def _close(self, exc: BaseException | None) -> None:
        self._closed = True
        for relay in self._relays.values():
            relay.stop()
        tasks = [*self._tasks.values(), *self._stopping]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for helper in (self._notifier, self._watch):
            if helper is not None:
                await cancel_and_wait(helper)
        if self._transactions is not None:
            await self._transactions.close()

    def stalled(self) -> list[tuple[int, float, str]]:
        """The relays whose batch has run longer than ``stalled_after_ms``.

        Returns:
            ``(partition, when the batch started (monotonic), the chain of awaits it
            waits in)`` of each.
        """
        limit_s = self._config.stalled_after_ms / 1000
        now = time.monotonic()
        found = []
        for shard, relay in self._relays.items():
            started = relay.batch_started
            task = self._tasks.get(shard)
            if started is not None and now - started > limit_s and task is not None:
                found.append((shard, started, awaiting(task)))
        return found

    async def _watch_for_stalls(self) -> None:
        warned: dict[int, float] = {}  # partition -> start of the batch warned about
        while True:
            await asyncio.sleep(min(30.0, self._config.stalled_after_ms / 4000))
            for shard, started, where in self.stalled():
                if warned.get(shard) != started:
                    warned[shard] = started
                    log.warning(
                        "relay of %s[%d]: its batch has run for %.0f s (stalled?); it waits"
                        " in %s. Every step of a batch has a time limit below"
                        " stalled_after_ms, so this is a bug: please report it with this line",
                        self.owner_topic,
                        shard,
                        time.monotonic() - started,
                        where,
                    )

    def takes_offers(self, shards: Iterable[int]) -> bool:
        """Whether the relays of all these partitions run and take rows handed over.

        A writer that owns these lanes may then leave its rows unannounced and
        :meth:`offer` them after its commit (see :meth:`Relay.offer`).
        """
        relays = self._relays
        return all(shard in relays and relays[shard].takes_offers for shard in shards)

    def offer(self, lanes: Mapping[int, Sequence[OutboxRow]]) -> None:
        """Hand committed rows to the relays of their partitions (``shard -> rows``).

        Rows of a partition without a running relay are left to the read of the relay
        that starts there.
        """
        for shard, rows in lanes.items():
            relay = self._relays.get(shard)
            if relay is not None:
                relay.offer(rows)

    def read(self, shards: Iterable[int]) -> None:
        """Make the relays of these partitions read their lanes now.

        For a writer whose commit failed after it chose not to announce its rows: the
        commit may have happened all the same.
        """
        for shard in shards:
            relay = self._relays.get(shard)
            if relay is not None:
                relay.wake()

    def _wake(self, payload: str) -> None:
        for shard, relay in self._relays.items():
            if payload in ("", lane_payload(self.owner_topic, shard)):
                relay.wake()

    def follow(self, partitions: frozenset[int], member: GroupMember | None = None) -> None:
        """Run exactly the relays of ``partitions`` (called after every rebalance).

        Args:
            partitions: The partitions of ``owner_topic`` assigned to this process.
            member: The group member and generation of that assignment; shared
                transactions (``producer_per="process"``) are fenced by it.
        """
        if self._closed:
            return
        if self._transactions is not None:
            if partitions and member is None:
                raise ValueError(
                    "a relay pool with producer_per='process' fences its transactions by"
                    " the consumer group generation: pass the member of the assignment"
                    " (saga.kafka.group_member_of), or use RelayConfig(producer_per='lane')"
                    " for a pool that no consumer group drives"
                )
            self._transactions.follow(partitions, member)
        for shard in sorted(set(self._tasks) - partitions):
            log.info("relay of %s[%d]: the partition moved; stopping", self.owner_topic, shard)
            task = self._tasks.pop(shard)
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
            relay = self._relays.pop(shard, None)
            if relay is not None:
                relay.stop()
        for shard in sorted(partitions - set(self._tasks)):
            self._tasks[shard] = asyncio.create_task(
                self._supervise(shard), name=f"saga-relay-{self.owner_topic}[{shard}]"
            )

    def _following(self, shard: int) -> bool:
        return not self._closed and self._tasks.get(shard) is asyncio.current_task()

    async def _supervise(self, shard: int) -> None:
        """Run the partition's relay while it is followed (see the module docstring).

        A relay that ends on a transient failure is started again after a back-off; a
        fenced one after :data:`FENCED_PAUSE_S`, if the partition is still followed.
        """
        cfg = self._config
        backoff = Backoff(cfg.backoff_initial_ms / 1000, cfg.backoff_max_ms / 1000)
        config = dataclasses.replace(cfg, owner_topic=self.owner_topic, shard=shard, relay_id="")
        failure: BaseException
        delay: float
        while self._following(shard):
            relay = Relay(
                self._engine,
                self._bootstrap,
                self._topics,
                config,
                listen=False,
                transactions=self._transactions,
            )
            self._relays[shard] = relay
            try:
                async with relay:
                    relay.wake()
                    await relay.run_until_stopped()
                return
            except ProducerFenced as exc:
                # Normally the partition moved and the group tells us so soon. If it is
                # still ours after a pause (a zombie with our id, a transaction the broker
                # timed out), start again: that fences whoever holds the id now.
                log.info(
                    "relay %s was fenced (%s); %s[%d] is published by whoever holds the id",
                    relay.relay_id,
                    exc,
                    self.owner_topic,
                    shard,
                )
                failure = exc
                delay = FENCED_PAUSE_S
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed or (task is not None and task.cancelling()):
                    raise
                failure = TransportError("the Kafka client cancelled the relay")
                delay = backoff.next_delay()
            except SagaError as exc:
                if not exc.retriable:
                    log.error("relay %s failed: %s", relay.relay_id, exc)
                    self._on_failure(exc)
                    return
                failure = exc
                delay = backoff.next_delay()
            except Exception as exc:
                log.error("relay %s failed: %r", relay.relay_id, exc)
                self._on_failure(exc)
                return
            finally:
                if self._relays.get(shard) is relay:
                    del self._relays[shard]
                self._published_before += relay.published
            await asyncio.sleep(delay)
            if not self._following(shard):
                return
            self.restarts += 1
            log.warning("relay %s restarts after: %s", relay.relay_id, failure)
